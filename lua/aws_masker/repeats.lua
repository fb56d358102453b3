-- Repeated originals: every occurrence of a value the catalog found, wherever it stands.
--
-- Patterns that need context (an account ID after "account", a secret after its key) find a
-- value once; the same value elsewhere in the body, without that context, would go upstream in
-- clear (a history the client resends holds restored originals without their context). After
-- the scan, every occurrence of an original found anywhere in the body is masked with its token.
--
-- Rule: an occurrence counts when the byte before it and the byte after it are not
-- [A-Za-z0-9_], and no "." followed by a digit comes right after it or a digit followed by "."
-- right before it (10.0.0.1 is not inside 10.0.0.12, 5.10.0.0.1 or 10.0.0.1.5; i-0abc is not
-- inside i-0abcd or i-0abc_x). Catalog matches win over occurrences they overlap; of two
-- overlapping occurrences the leftmost wins, the longer one at the same offset. The Python twin
-- (repeated_originals in aws_masker_engine.py) applies the same rule.

local rarest = require "aws_masker.rarest"

local find = string.find
local byte = string.byte
local sub = string.sub
local match = string.match
local ipairs = ipairs
local sort = table.sort

-- Up to this many distinct originals a plain find per original is cheapest; above it, a text
-- is walked once, word by word, each word looked up among the originals' leading words.
local FIND_EACH_UP_TO = 128

local _M = {}

local WORD, DIGIT = {}, {}
for b = byte("0"), byte("9") do
  WORD[b], DIGIT[b] = true, true
end
for b = byte("A"), byte("Z") do
  WORD[b] = true
end
for b = byte("a"), byte("z") do
  WORD[b] = true
end
WORD[byte("_")] = true
local DOT = byte(".")
local WORD_RUN = "[A-Za-z0-9_]+"

-- The distinct values of findings (a list of matches, in order of first appearance), each
-- with the first finding that holds it. With many of them, the values starting with a word
-- byte are indexed by their leading word ([A-Za-z0-9_]+): a bounded occurrence of such a value
-- starts a word of the text that is exactly that leading word. The others (a log group path)
-- are found one by one. find_each_up_to overrides FIND_EACH_UP_TO (specs compare both ways).
function _M.new(findings, find_each_up_to)
  local values, finding_of, shortest = {}, {}, nil
  for n = 1, #findings do
    local v = findings[n].value
    if not finding_of[v] then
      finding_of[v] = n
      values[#values + 1] = v
      if not shortest or #v < shortest then
        shortest = #v
      end
    end
  end

  local by_lead, loose
  if #values > (find_each_up_to or FIND_EACH_UP_TO) then
    by_lead, loose = {}, {}
    for i = 1, #values do
      local v = values[i]
      local lead = match(v, "^" .. WORD_RUN)
      if lead then
        local list = by_lead[lead]
        if not list then
          list = {}
          by_lead[lead] = list
        end
        list[#list + 1] = v
      else
        loose[#loose + 1] = v
      end
    end
  end
  -- Each value found one by one is looked for from its rarest byte (aws_masker.rarest).
  local keys, skips = {}, {}
  for _, v in ipairs(by_lead and loose or values) do
    local at = rarest.offset(v)
    keys[v], skips[v] = sub(v, at), at - 1
  end
  return { count = #values, values = values, finding_of = finding_of, findings = findings,
    shortest = shortest or 1, by_lead = by_lead, loose = loose, keys = keys, skips = skips }
end

local function bounded(text, s, e)
  local before, after = byte(text, s - 1), byte(text, e + 1)
  if before and (WORD[before] or (before == DOT and DIGIT[byte(text, s - 2)])) then
    return false
  end
  if after and (WORD[after] or (after == DOT and DIGIT[byte(text, e + 2)])) then
    return false
  end
  return true
end

local function occurrence(set, found, v, s, e)
  local n = set.finding_of[v]
  local f = set.findings[n]
  found = found or {}
  found[#found + 1] = { start = s, stop = e, name = f.name, code = f.code, value = v,
    finding = n }
  return found
end

local function earlier(a, b)
  if a.start ~= b.start then
    return a.start < b.start
  end
  return a.stop > b.stop
end

-- The matches of text with every bounded occurrence of an original added (matches: the
-- catalog's, sorted, or nil/false). Returns matches itself when nothing is added.
function _M.extend(set, text, matches)
  if #text < set.shortest then
    return matches
  end

  local found
  local by_lead = set.by_lead
  local values = by_lead and set.loose or set.values
  local keys, skips = set.keys, set.skips
  for i = 1, #values do
    local v = values[i]
    local skip, len = skips[v], #v
    local k = find(text, keys[v], skip + 1, true)
    while k do
      local s = k - skip
      local e = s + len - 1
      if s >= 1 and (skip == 0 or sub(text, s, k - 1) == sub(v, 1, skip))
          and bounded(text, s, e) then
        found = occurrence(set, found, v, s, e)
      end
      k = find(text, keys[v], k + 1, true)
    end
  end
  if by_lead then
    local s, e = find(text, WORD_RUN)
    while s do
      local list = by_lead[sub(text, s, e)]
      if list then
        for k = 1, #list do
          local v = list[k]
          local stop = s + #v - 1
          if (stop == e or sub(text, s, stop) == v) and bounded(text, s, stop) then
            found = occurrence(set, found, v, s, stop)
          end
        end
      end
      s, e = find(text, WORD_RUN, e + 1)
    end
  end
  if not found then
    return matches
  end

  if #found > 1 then
    sort(found, earlier)
  end
  local out, j, last, added = {}, 1, 0, false
  local nm = matches and #matches or 0
  for k = 1, #found do
    local c = found[k]
    while j <= nm and matches[j].stop < c.start do
      out[#out + 1] = matches[j]
      last = matches[j].stop
      j = j + 1
    end
    if c.start > last and not (j <= nm and matches[j].start <= c.stop) then
      out[#out + 1] = c
      last = c.stop
      added = true
    end
  end
  if not added then
    return matches
  end
  for k = j, nm do
    out[#out + 1] = matches[k]
  end
  return out
end

return _M
