-- Masking a JSON body in its raw text, so that everything not masked stays byte for byte.
--
-- The body is validated with cjson first, then the raw text is walked with the decoded document
-- alongside (to know the "type" of an object before reaching its keys). Only the strings that
-- hold an identifier are decoded, rewritten and re-encoded; numbers, escapes of other strings,
-- key order and whitespace are copied as they are.

local cjson = require "cjson.safe"
local json_string = require "aws_masker.json_string"
local repeats = require "aws_masker.repeats"

local find = string.find
local byte = string.byte
local sub = string.sub
local concat = table.concat
local type = type

local decoder = cjson.new()
decoder.decode_invalid_numbers(false) -- NaN, Infinity and hex are not JSON
decoder.decode_max_depth(512)

local _M = {}

-- Values of these keys are the API's own structure and are never masked (outside content).
local STRUCTURAL_KEYS = {
  type = true, role = true, model = true, id = true, tool_use_id = true, signature = true,
  media_type = true, stop_reason = true, stop_sequence = true,
}

-- Values under these keys are content all the way down: structural keys no longer apply.
local CONTENT_KEYS = { input = true, input_schema = true }

-- Keys of the API whose values are prose: their name says nothing about what the value is, so
-- the value is not scanned a second time after its key (see keyed_match).
local PROSE_KEYS = { text = true, content = true, thinking = true, system = true,
  description = true, title = true, name = true, data = true }

-- Values longer than this are not scanned after their key: the longest value a pattern names
-- by its key (a session token) is shorter.
local KEYED_VALUE_MAX = 8448

local QUOTE, BACKSLASH = byte('"'), byte("\\")
local LBRACE, RBRACE, LBRACKET, RBRACKET = byte("{"), byte("}"), byte("["), byte("]")

local API, CONTENT, UNTOUCHED = 1, 2, 3

_M.STRUCTURAL_KEYS = STRUCTURAL_KEYS

-- Validates and decodes a JSON text. Returns the document or nil, err.
function _M.decode(raw)
  local doc, err = decoder.decode(raw)
  if doc == nil then
    return nil, err or "invalid JSON"
  end
  return doc
end

local function string_end(raw, i)
  local j = i + 1
  local escaped = false
  while true do
    local k = find(raw, '["\\]', j)
    if not k then
      return nil
    end
    if byte(raw, k) == BACKSLASH then
      escaped = true
      j = k + 2
    else
      return k, escaped
    end
  end
end

-- Walks the raw JSON text (already validated, doc = its decoding) and calls
-- visit(state, first, last, escaped, is_key, field) for every string that may be rewritten:
-- first and last are the offsets of its quotes. structural = true walks a request: values of
-- the structural keys outside content and base64 data come with field set to their key (they
-- are checked, never rewritten), a thinking block is skipped only in an assistant turn's
-- content (where the API made it; anywhere else it would hide text from the scan), and a key
-- twice in one object is an error (cjson keeps the last, the text walked holds both), and a
-- number under a key comes with field "number" (first and last enclose its text). With
-- structural = false (a response) base64 data and thinking blocks are skipped.
function _M.walk(raw, doc, structural, visit, state)
  local stack = {}
  local depth = 0
  local frame
  local pos = 1
  local objects = 0 -- numbers the objects, so a frame's table of seen keys is reused

  while true do
    local i = find(raw, '[{}%[%]",]', pos)
    if not i then
      return true
    end

    local c = byte(raw, i)
    if c == QUOTE then
      local j, escaped = string_end(raw, i)
      if not j then
        return nil, "unterminated string"
      end

      if frame and frame.object and frame.expect_key then
        local key = sub(raw, i + 1, j - 1)
        if escaped then
          key = json_string.decode(key)
        end
        if structural then
          local seen = frame.seen
          if seen[key] == frame.number then
            return nil, "duplicate key in an object"
          end
          seen[key] = frame.number
        end
        frame.key = key
        frame.expect_key = false
        if frame.mode ~= UNTOUCHED then
          visit(state, i, j, escaped, true)
          -- A number is never rewritten; its key may still name it (an account ID).
          if structural and frame.node and type(frame.node[key]) == "number"
              and (frame.mode == CONTENT or not PROSE_KEYS[key]) then
            local first = find(raw, "[^%s:]", j + 1)
            local last = find(raw, "[%s,}]", first)
            visit(state, first - 1, last, false, false, "number", key)
          end
        end

      elseif not frame then
        visit(state, i, j, escaped, false)

      elseif frame.mode ~= UNTOUCHED then
        local key = frame.key
        local field = frame.object and frame.mode == API
          and ((frame.base64 and key == "data") or (structural and STRUCTURAL_KEYS[key]))
        if not field then
          local context = frame.object and (frame.mode == CONTENT or not PROSE_KEYS[key])
          visit(state, i, j, escaped, false, nil, context and key or nil)
        elseif structural then
          visit(state, i, j, escaped, false, key)
        end
      end
      pos = j + 1

    elseif c == LBRACE or c == LBRACKET then
      local node, mode
      if not frame then
        node, mode = doc, API
      else
        mode = frame.mode
        local parent = frame.node
        if type(parent) == "table" then
          if frame.object then
            node = parent[frame.key]
          else
            node = parent[frame.index]
          end
        end
        if mode == API and frame.object and CONTENT_KEYS[frame.key] then
          mode = CONTENT
        end
      end

      local object = c == LBRACE
      local base64, assistant_content = false, false
      if object and mode == API and type(node) == "table" then
        local t = node.type
        if (t == "thinking" or t == "redacted_thinking")
            and (not structural or (frame and frame.assistant_content)) then
          mode = UNTOUCHED
        elseif t == "base64" then
          base64 = true
        end
      elseif not object and mode == API and frame and frame.object and frame.key == "content"
          and frame.node and frame.node.role == "assistant" then
        assistant_content = true
      end

      depth = depth + 1
      frame = stack[depth]
      if not frame then
        frame = { seen = {} }
        stack[depth] = frame
      end
      objects = objects + 1
      frame.number = objects
      frame.object = object
      frame.node = type(node) == "table" and node or nil
      frame.mode = mode
      frame.base64 = base64
      frame.assistant_content = assistant_content
      frame.expect_key = object
      frame.key = nil
      frame.index = 1
      pos = i + 1

    elseif c == RBRACE or c == RBRACKET then
      depth = depth - 1
      frame = stack[depth]
      pos = i + 1

    else -- comma
      if frame then
        if frame.object then
          frame.expect_key = true
        else
          frame.index = frame.index + 1
        end
      end
      pos = i + 1
    end
  end
end

-- The match a value gets from the key naming it, which a scan of the value alone misses:
-- patterns that need context ("SecretAccessKey": "...", "AccountId": "...", "Bucket": "...")
-- see the pair written as JSON. Only a match of the value from its first byte is taken.
local function keyed_match(catalog, key, text)
  local prefix = '"' .. key .. '": "'
  local found, err = catalog:scan(prefix .. text .. '"')
  if not found then
    return nil, err
  end
  local offset = #prefix
  for k = 1, #found do
    local m = found[k]
    if m.start == offset + 1 and m.stop <= offset + #text then
      m.start, m.stop = 1, m.stop - offset
      return m
    end
  end
end

-- Puts the keyed match first in matches, in place of those of the value alone that it covers,
-- as the key's pattern would win in the same pair written inside a string. A match that runs
-- past its end keeps its place and the keyed match is dropped.
local function with_keyed_match(matches, keyed)
  if not matches then
    return { keyed }
  end
  local covered = 0
  for k = 1, #matches do
    local m = matches[k]
    if m.start > keyed.stop then
      break
    end
    if m.stop > keyed.stop then
      return matches
    end
    covered = k
  end
  local out = { keyed }
  for k = covered + 1, #matches do
    out[#out + 1] = matches[k]
  end
  return out
end

-- field: the string is the value of an API field (a structural key, or base64 data), or
-- "number" for the text of a number; it is never rewritten, so an identifier in it refuses the
-- whole request. key: the key of a value whose name may say what the value is.
local function collect(plan, first, last, escaped, _, field, key)
  local raw = plan.raw
  local text = sub(raw, first + 1, last - 1)
  if escaped then
    text = json_string.decode(text)
  end

  if field == "data" then
    -- Not scanned (megabytes of media), but nothing outside the alphabet of base64 passes,
    -- so no identifier with a hyphen, dot, colon or space hides there.
    if find(text, "[^A-Za-z0-9+/=\r\n]") then
      plan.refused = "the data of a base64 source holds characters outside base64; "
        .. "the request was not forwarded"
    end
    return
  end

  if field == "number" then
    local keyed, err = keyed_match(plan.catalog, key, text)
    if keyed then
      plan.refused = "an AWS identifier written as a JSON number cannot be masked; "
        .. "the request was not forwarded"
    end
    plan.err = plan.err or err
    return
  end

  -- API field values repeat ("type": "text" a thousand times): each is scanned once.
  local clean = plan.clean
  if field and clean[text] then
    return
  end

  local matches, err = plan.catalog:scan(text)
  if err then
    plan.err = err
    return
  end
  if field then
    if matches then
      plan.refused = "an AWS identifier in the API field '" .. field .. "' cannot be masked; "
        .. "the request was not forwarded"
    end
    clean[text] = true
    return
  end

  if key and #text <= KEYED_VALUE_MAX then
    local keyed
    keyed, err = keyed_match(plan.catalog, key, text)
    if err then
      plan.err = err
      return
    end
    if keyed then
      matches = with_keyed_match(matches, keyed)
    end
  end
  -- Every maskable string is kept for the pass over repeated originals (plan_edits).
  local n = plan.strings + 1
  plan.strings = n
  plan.firsts[n], plan.lasts[n], plan.texts[n] = first, last, text
  plan.found[n] = matches or false
  if not matches then
    return
  end

  local findings, index = plan.findings, plan.index
  for k = 1, #matches do
    local m = matches[k]
    local id = m.code .. "\0" .. m.value
    local f = index[id]
    if not f then
      f = #findings + 1
      findings[f] = m
      index[id] = f
    end
    m.finding = f
  end
end

-- The edits of a plan: every maskable string with its catalog matches and, once the body held
-- an identifier, every bounded occurrence of a value found anywhere in it (aws_masker.repeats):
-- a value found only by its context goes nowhere in clear. Bodies without one skip the pass.
local function plan_edits(plan)
  local edits, findings = plan.edits, plan.findings
  if #findings == 0 then
    return
  end
  local set = repeats.new(findings)
  local firsts, lasts, texts, found = plan.firsts, plan.lasts, plan.texts, plan.found
  for k = 1, plan.strings do
    local text = texts[k]
    local matches = repeats.extend(set, text, found[k])
    if matches then
      edits[#edits + 1] = { first = firsts[k], last = lasts[k], text = text, matches = matches }
    end
  end
end

-- Finds every identifier in a JSON request body. Returns a plan
-- { edits = {...}, findings = { {code, value, name, ...}, ... } } or nil, err and, when the
-- client is at fault (invalid JSON, an identifier where it cannot be masked), true.
-- findings lists each distinct (code, value) once, in order of first appearance.
function _M.scan(raw, catalog)
  local doc, err = _M.decode(raw)
  if doc == nil then
    return nil, "malformed JSON body: " .. err, true
  end

  local plan = { raw = raw, catalog = catalog, edits = {}, findings = {}, index = {},
    clean = {}, strings = 0, firsts = {}, lasts = {}, texts = {}, found = {} }
  local ok
  ok, err = _M.walk(raw, doc, true, collect, plan)
  if not ok then
    return nil, "malformed JSON body: " .. err, true
  end
  if plan.err then
    return nil, plan.err
  end
  if plan.refused then
    return nil, plan.refused, true
  end
  plan_edits(plan)
  return plan
end

-- Rewrites the body of a plan: tokens[i] replaces every occurrence of findings[i].
function _M.rewrite(plan, tokens)
  local raw, edits = plan.raw, plan.edits
  if #edits == 0 then
    return raw
  end

  local out, n, pos = {}, 0, 1
  for e = 1, #edits do
    local edit = edits[e]
    local text, matches = edit.text, edit.matches
    local parts, p, tpos = {}, 0, 1
    for k = 1, #matches do
      local m = matches[k]
      p = p + 1
      parts[p] = sub(text, tpos, m.start - 1)
      p = p + 1
      parts[p] = tokens[m.finding]
      tpos = m.stop + 1
    end
    p = p + 1
    parts[p] = sub(text, tpos)

    n = n + 1
    out[n] = sub(raw, pos, edit.first)
    n = n + 1
    out[n] = json_string.encode(concat(parts, "", 1, p))
    pos = edit.last
  end
  n = n + 1
  out[n] = sub(raw, pos)
  return concat(out, "", 1, n)
end

return _M
