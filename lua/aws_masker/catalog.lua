-- The pattern catalog compiled for ngx.re: one alternation, one scan per text.
--
-- The catalog file is catalog/aws_patterns.yml converted to JSON as it is. The result of a scan
-- is the one of the single alternation (?P<p0>re0)|(?P<p1>re1)|... run once over the text: the
-- leftmost match wins and, at the same offset, the earlier pattern wins (docs/ARCHITECTURE.md).
-- No "u" flag: the scan works on bytes, exactly like the Python twin with re.ASCII.
--
-- scan() gets that result without running the alternation: PCRE cannot use any start-of-match
-- optimisation on a large alternation and tries every alternative at every byte (about 1 MB/s
-- for the shipped catalog). Each pattern is searched on its own instead, its next match kept,
-- and the leftmost (earliest pattern on a tie) is taken; a pattern is searched again only when
-- its kept match starts before the end of the last one taken. An alternative matching at an
-- offset matches exactly as its regex alone does there, so the matches are the same, several
-- times faster. Before that, a pattern is left out of a text holding none of its literals
-- (candidates(): a plain find per literal, far faster than any regex), so most texts run a
-- handful of regexes, or none. scan_alternation() runs the alternation itself; specs check
-- that both always agree.

local cjson = require "cjson.safe"
local rarest = require "aws_masker.rarest"

local re_match = ngx.re.match
local re_find = ngx.re.find
local io_open = io.open
local sub = string.sub
local find = string.find
local lower = string.lower
local concat = table.concat
local type = type
local ipairs = ipairs
local setmetatable = setmetatable

local REGEX_OPTIONS = "jo"

local CODE_GRAMMAR = [[^[A-Z][A-Z0-9]*(?:_[A-Z][A-Z0-9]*)*$]]

local _M = {}
local mt = { __index = _M }

local function read_file(path)
  local f, err = io_open(path, "rb")
  if not f then
    return nil, "cannot open catalog: " .. err
  end
  local text = f:read("*a")
  f:close()
  return text
end

-- Builds a compiled catalog from the decoded catalog document (subset: it is the base64 part of
-- another, which has no such part of its own).
function _M.new(doc, subset)
  if type(doc) ~= "table" or doc.version ~= 1 or type(doc.patterns) ~= "table" then
    return nil, "catalog must be a table with version 1 and a list of patterns"
  end

  local patterns = doc.patterns
  if #patterns == 0 then
    return nil, "catalog has no patterns"
  end

  local parts, names, codes, groups, seen, regexes = {}, {}, {}, {}, {}, {}
  local literals, literal_index, pattern_literals = {}, {}, {}
  for i, p in ipairs(patterns) do
    local name, code, regex = p.name, p.token, p.regex
    if type(name) ~= "string" or type(code) ~= "string" or type(regex) ~= "string" then
      return nil, "catalog pattern #" .. i .. " needs string name, token and regex"
    end
    if seen[name] then
      return nil, "catalog pattern name '" .. name .. "' is used twice"
    end
    seen[name] = true
    if not re_find(code, CODE_GRAMMAR, REGEX_OPTIONS) or find(code, "%d%d%d%d%d%d") then
      return nil, "catalog pattern '" .. name .. "' has an invalid token code"
    end
    if re_find(regex, [[\(\?P?<p[0-9]+>]], REGEX_OPTIONS) then
      return nil, "catalog pattern '" .. name .. "' uses a reserved group name pN"
    end
    local _, _, err = re_find("", regex, REGEX_OPTIONS)
    if err then
      return nil, "catalog pattern '" .. name .. "' does not compile: " .. err
    end

    local group = p.value_group
    if group ~= nil and type(group) ~= "string" then
      group = nil -- JSON null
    end
    if group and not find(regex, "(?P<" .. group .. ">", 1, true) then
      return nil, "catalog pattern '" .. name .. "' has no group '" .. group .. "'"
    end

    -- literals: the pattern matches only in a text holding one of them, ASCII case ignored
    -- (tests/unit/test_catalog_literals.py proves it from each regex); none: every text.
    local lits = p.literals
    if lits == cjson.null then
      lits = nil
    end
    if lits ~= nil and type(lits) ~= "table" then
      return nil, "catalog pattern '" .. name .. "' needs a list of literals"
    end
    if lits and #lits > 0 then
      local list = {}
      for k, lit in ipairs(lits) do
        if type(lit) ~= "string" or lit == "" then
          return nil, "catalog pattern '" .. name .. "' has an empty or non-string literal"
        end
        -- Any part of a required literal is required: the part from its rarest byte that
        -- keeps 3 bytes (all of a shorter one) is looked for, a cheaper search.
        lit = lower(lit)
        lit = sub(lit, rarest.offset(lit, 3))
        local idx = literal_index[lit]
        if not idx then
          idx = #literals + 1
          literals[idx], literal_index[lit] = lit, idx
        end
        list[k] = idx
      end
      pattern_literals[i] = list
    else
      pattern_literals[i] = false
    end

    local alt = "p" .. (i - 1)
    parts[i] = "(?P<" .. alt .. ">" .. regex .. ")"
    names[i], codes[i], groups[i] = name, code, group or false
    regexes[i] = regex
  end

  local combined = concat(parts, "|")
  local _, _, err = re_find("", combined, REGEX_OPTIONS)
  if err then
    return nil, "combined catalog regex does not compile: " .. err
  end

  local alts = {}
  for i = 1, #names do
    alts[i] = "p" .. (i - 1)
  end

  local ctxs, caps = {}, {}
  for i = 1, #codes do
    ctxs[i], caps[i] = {}, {}
  end

  -- The patterns that stand in base64 text as they are: those whose examples are all written
  -- in its alphabet (access key IDs, IAM unique IDs, ...). base64 data is searched for them.
  local base64
  if not subset then
    local in_alphabet = {}
    for _, p in ipairs(patterns) do
      local examples = type(p.examples) == "table" and p.examples or {}
      local all = #examples > 0
      for _, example in ipairs(examples) do
        if type(example) ~= "string" or not find(example, "^[A-Za-z0-9+/=]+$") then
          all = false
          break
        end
      end
      if all then
        in_alphabet[#in_alphabet + 1] = p
      end
    end
    if #in_alphabet > 0 then
      base64, err = _M.new({ version = 1, patterns = in_alphabet }, true)
      if not base64 then
        return nil, err
      end
    end
  end

  return setmetatable({
    base64 = base64,
    regexes = regexes,
    literals = literals,
    pattern_literals = pattern_literals,
    literal_seen = {}, -- per scan: literal index -> scan number when looked for
    literal_found = {}, -- literal index -> whether found, valid when literal_seen is current
    scans = 0,
    active = {},
    next_start = {}, -- per scan: the kept next match of each pattern (false: none left)
    next_stop = {},
    next_value = {},
    pattern_ctx = ctxs,
    pattern_captures = caps,
    regex = combined,
    count = #names,
    alts = alts,
    names = names,
    codes = codes,
    groups = groups,
    captures = {}, -- reused by every scan: ngx.re.match fills it in place
    scan_ctx = {},
  }, mt)
end

function _M.load(path)
  local text, err = read_file(path)
  if not text then
    return nil, err
  end
  local doc
  doc, err = cjson.decode(text)
  if not doc then
    return nil, "catalog is not valid JSON: " .. err
  end
  return _M.new(doc)
end

local function new_match(self, idx, text, start, stop)
  return {
    start = start,
    stop = stop,
    name = self.names[idx],
    code = self.codes[idx],
    value = sub(text, start, stop),
  }
end

-- Searches pattern i from pos and keeps its next non-empty match. Returns its start or false.
local function search(self, i, text, pos)
  local regex, ctx, group = self.regexes[i], self.pattern_ctx[i], self.groups[i]
  local len = #text
  while pos <= len + 1 do
    ctx.pos = pos
    local start, stop, err
    if group then
      local m
      m, err = re_match(text, regex, REGEX_OPTIONS, ctx, self.pattern_captures[i])
      if m then
        stop = ctx.pos - 1
        start = stop - #m[0] + 1
        local v = m[group]
        local value = start
        if v and #v > 0 and sub(text, stop - #v + 1, stop) == v then
          value = stop - #v + 1
        end
        self.next_value[i] = value
      end
    else
      start, stop, err = re_find(text, regex, REGEX_OPTIONS, ctx)
      if start then
        self.next_value[i] = start
      end
    end

    if not start then
      if err then
        return nil, err
      end
      self.next_start[i] = false
      return false
    end
    if stop >= start then
      self.next_start[i], self.next_stop[i] = start, stop
      return start
    end
    pos = start + 1 -- an empty match masks nothing: look further
  end
  self.next_start[i] = false
  return false
end

-- The patterns that can match in text, in catalog order, into self.active; returns their
-- count. A pattern with literals can match only where one of them stands (ASCII case ignored,
-- tests/unit/test_catalog_literals.py proves each is required by its regex): a plain find in
-- the lower-cased text, once per distinct literal and text, rules it out otherwise.
function _M:candidates(text)
  local scans = self.scans + 1
  self.scans = scans
  local literals, pattern_literals = self.literals, self.pattern_literals
  local seen, found, active = self.literal_seen, self.literal_found, self.active
  local low = lower(text)
  local n = 0
  for i = 1, self.count do
    local lits = pattern_literals[i]
    local possible = not lits
    if lits then
      for k = 1, #lits do
        local idx = lits[k]
        if seen[idx] ~= scans then
          seen[idx] = scans
          found[idx] = find(low, literals[idx], 1, true) ~= nil
        end
        if found[idx] then
          possible = true
          break
        end
      end
    end
    if possible then
      n = n + 1
      active[n] = i
    end
  end
  return n
end

-- Scans text. Returns a list of matches {start, stop, name, code, value} (byte offsets,
-- inclusive, of the part to mask: the value group when the pattern has one), or nil when none.
function _M:scan(text)
  local count = self:candidates(text)
  if count == 0 then
    return nil
  end
  local active = self.active
  local next_start, next_stop, next_value = self.next_start, self.next_stop, self.next_value
  for k = 1, count do
    next_start[active[k]] = 0 -- not searched yet
  end

  local pos, matches = 1, nil
  while true do
    local best, best_start
    for k = 1, count do
      local i = active[k]
      local s = next_start[i]
      if s and s < pos then
        local err
        s, err = search(self, i, text, pos)
        if s == nil then
          return nil, "catalog scan failed: " .. err
        end
      end
      if s and (not best or s < best_start) then
        best, best_start = i, s
      end
    end

    if not best then
      return matches
    end
    local stop = next_stop[best]
    matches = matches or {}
    matches[#matches + 1] = new_match(self, best, text, next_value[best], stop)
    pos = stop + 1
  end
end

-- The same scan with the alternation itself: the reference scan() must agree with.
function _M:scan_alternation(text)
  local ctx, captures = self.scan_ctx, self.captures
  local regex, alts, count = self.regex, self.alts, self.count
  local matches
  ctx.pos = 1

  while true do
    local m, err = re_match(text, regex, REGEX_OPTIONS, ctx, captures)
    if not m then
      if err then
        return nil, "catalog scan failed: " .. err
      end
      return matches
    end

    local whole = m[0]
    local stop = ctx.pos - 1
    if #whole == 0 then
      ctx.pos = ctx.pos + 1 -- no pattern should match empty text; never loop on one that does
    else
      local idx
      for i = 1, count do
        if m[alts[i]] then
          idx = i
          break
        end
      end

      local start = stop - #whole + 1
      local group = self.groups[idx]
      if group then
        local v = m[group]
        if v and #v > 0 and sub(text, stop - #v + 1, stop) == v then
          start = stop - #v + 1
        end
      end

      matches = matches or {}
      matches[#matches + 1] = new_match(self, idx, text, start, stop)
    end

    if ctx.pos > #text then
      return matches
    end
  end
end

return _M
