-- Masking a JSON body in its raw text, so that everything not masked stays byte for byte.
--
-- The body is validated with cjson first, then the raw text is walked with the decoded document
-- alongside (to know the "type" of an object before reaching its keys). Only the strings that
-- hold an identifier are decoded, rewritten and re-encoded; numbers, escapes of other strings,
-- key order and whitespace are copied as they are.

local cjson = require "cjson.safe"
local json_string = require "aws_masker.json_string"
local repeats = require "aws_masker.repeats"
local thinking = require "aws_masker.thinking"

local re_find = ngx.re.find
local decode_base64 = ngx.decode_base64
local encode_base64 = ngx.encode_base64
local find = string.find
local gsub = string.gsub
local lower = string.lower
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

-- Modes of a frame: the API's structure, content (everything masked), untouched (skipped),
-- sealed (checked, never rewritten: an assistant turn's thinking block).
local API, CONTENT, UNTOUCHED, SEALED = 1, 2, 3, 4

-- frame.base64 of a base64 source whose media type is text/plain: its data is decoded, masked
-- and encoded again.
local TEXT_DOCUMENT = "text"

_M.STRUCTURAL_KEYS = STRUCTURAL_KEYS

-- Validates and decodes a JSON text. Returns the document or nil, err.
function _M.decode(raw)
  local doc, err = decoder.decode(raw)
  if doc == nil then
    return nil, err or "invalid JSON"
  end
  return doc
end

-- The first backslash of raw at or after from (false: none), remembered across calls: the walk
-- asks with growing offsets, so the body is searched once, not once per string.
local bs_raw, bs_from, bs_at

local function backslash_from(raw, from)
  if raw ~= bs_raw or from < bs_from or (bs_at and bs_at < from) then
    bs_raw, bs_from = raw, from
    bs_at = find(raw, "\\", from, true) or false
  end
  return bs_at
end

-- The closing quote of the string whose opening quote is at i (the body is valid JSON), and
-- whether the string holds an escape. A quote ends the string when an even number of
-- backslashes stands right before it.
local function string_end(raw, i)
  local k = find(raw, '"', i + 1, true)
  while k do
    local p = k - 1
    while byte(raw, p) == BACKSLASH do
      p = p - 1
    end
    if (k - 1 - p) % 2 == 0 then
      local bs = backslash_from(raw, i + 1)
      return k, bs ~= false and bs < k
    end
    k = find(raw, '"', k + 1, true)
  end
  return nil
end

-- Whether a number stands at the start of raw[pos..] (after blanks): its first and last offsets
-- in the form visit takes (the bytes around the number's text).
local function number_at(raw, pos)
  local first = find(raw, "[^%s]", pos)
  return first - 1, find(raw, "[%s,}%]]", first)
end

-- An item of a list that is a number is checked like a number under the list's key.
local function list_number(raw, frame, visit, state, pos)
  local key, node, mode = frame.list_key, frame.node, frame.mode
  if key and node and type(node[frame.index]) == "number"
      and (mode == CONTENT or mode == SEALED or (mode == API and not PROSE_KEYS[key])) then
    local first, last = number_at(raw, pos)
    visit(state, first, last, false, false, "number", key)
  end
end

-- Walks the raw JSON text (already validated, doc = its decoding) and calls
-- visit(state, first, last, escaped, is_key, field, key, block) for every string that may be
-- rewritten: first and last are the offsets of its quotes, key the object key naming the value
-- (for an item of a list, the key of the list) where that name may say what the value is.
-- structural = true walks a request: values of the structural keys outside content come with
-- field set to their key (they are checked, never rewritten); base64 data with field "data", or
-- "text_data" for a text/plain document; every string of a thinking or redacted_thinking block
-- in an assistant turn's content with field "sealed", or "sealed_text" for the fields its
-- digest covers (aws_masker.thinking), and block, the decoded block (the API checks those
-- blocks against their signature, so they are checked, never rewritten; anywhere else such a
-- block would hide text from the scan, so it is content); a key twice in one object is an
-- error (cjson keeps the last, the text walked holds both); and a number under a key, or in a
-- list under a key, comes with field "number" (first and last enclose its text). With
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
        local mode = frame.mode
        if mode ~= UNTOUCHED then
          visit(state, i, j, escaped, true, mode == SEALED and "sealed" or nil, nil,
            frame.block)
          -- A number is never rewritten; its key may still name it (an account ID).
          if structural and frame.node and type(frame.node[key]) == "number"
              and (mode ~= API or not PROSE_KEYS[key]) then
            local first, last = number_at(raw, find(raw, ":", j + 1, true) + 1)
            visit(state, first, last, false, false, "number", key)
          end
        end

      elseif not frame then
        visit(state, i, j, escaped, false)

      elseif frame.mode == SEALED then
        local block = frame.block
        local covered = frame.object and frame.node == block
          and thinking.covered(block.type, frame.key)
        visit(state, i, j, escaped, false, covered and "sealed_text" or "sealed", nil, block)

      elseif frame.mode ~= UNTOUCHED then
        local key = frame.key
        local field = frame.object and frame.mode == API
          and ((frame.base64 and key == "data") or (structural and STRUCTURAL_KEYS[key]))
        if not field then
          if not frame.object then
            key = frame.list_key
          end
          local context = key and (frame.mode == CONTENT or not PROSE_KEYS[key])
          visit(state, i, j, escaped, false, nil, context and key or nil)
        elseif structural then
          if key == "data" and frame.base64 == TEXT_DOCUMENT then
            key = "text_data"
          end
          visit(state, i, j, escaped, false, key)
        end
      end
      pos = j + 1

    elseif c == LBRACE or c == LBRACKET then
      local node, mode, list_key, block
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
        if frame.object then
          list_key = frame.key
        else
          list_key = frame.list_key
        end
        block = frame.block
      end

      local object = c == LBRACE
      local base64, assistant_content = false, false
      if object and mode == API and type(node) == "table" then
        local t = node.type
        if t == "thinking" or t == "redacted_thinking" then
          if not structural then
            mode = UNTOUCHED
          elseif frame and frame.assistant_content then
            mode, block = SEALED, node
          end
        elseif t == "base64" then
          local media = node.media_type
          base64 = type(media) == "string" and find(lower(media), "^%s*text/plain")
            and TEXT_DOCUMENT or true
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
      frame.block = mode == SEALED and block or nil
      frame.expect_key = object
      frame.key = nil
      frame.list_key = not object and list_key or nil
      frame.index = 1
      pos = i + 1
      if not object and structural then
        list_number(raw, frame, visit, state, pos)
      end

    elseif c == RBRACE or c == RBRACKET then
      depth = depth - 1
      frame = stack[depth]
      pos = i + 1

    else -- comma
      pos = i + 1
      if frame then
        if frame.object then
          frame.expect_key = true
        else
          frame.index = frame.index + 1
          if structural then
            list_number(raw, frame, visit, state, pos)
          end
        end
      end
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

local REFUSED_BASE64 = "the data of a base64 source holds characters outside base64; "
  .. "the request was not forwarded"
local REFUSED_IN_BASE64 = "the data of a base64 source holds an AWS identifier as plain text; "
  .. "the request was not forwarded"
local REFUSED_TEXT_DOCUMENT = "the data of a text/plain base64 document is not valid base64; "
  .. "the request was not forwarded"
local REFUSED_NUMBER = "an AWS identifier written as a JSON number cannot be masked; "
  .. "the request was not forwarded"
local REFUSED_THINKING = "an assistant thinking block holds an AWS identifier, which cannot "
  .. "be masked without breaking the block's signature; the request was not forwarded "
  .. "(leave that block out of the history to go on)"

local token_text -- the grammar of a whole token, from aws_masker.unmask (which requires this)

-- Whether a match is text shaped like a token (AWS_EC2_000001): what the model writes in a
-- thinking block, since it only ever sees tokens.
local function is_token(m)
  if not token_text then
    token_text = [[\A(?:]] .. require("aws_masker.unmask").TOKEN_REGEX .. [[)\z]]
  end
  return re_find(m.value, token_text, "jo") ~= nil
end

local function holds_identifier(matches)
  if matches then
    for k = 1, #matches do
      if not is_token(matches[k]) then
        return true
      end
    end
  end
  return false
end

-- A thinking block holding what cannot be masked passes only when the gateway delivered it to
-- this scope: its digest is looked up with the store call (plan.digests), or, without the
-- shape of a block the API delivers, it is refused.
local function needs_trust(plan, block)
  local digest = thinking.block_digest(block)
  if not digest then
    plan.refused = REFUSED_THINKING
    return
  end
  if not plan.trusted[digest] then
    plan.trusted[digest] = true
    plan.digests[#plan.digests + 1] = digest
  end
end

-- A string of an assistant thinking block: holding an identifier, it refuses the request,
-- unless it is one of the fields the block's digest covers (block: the decoded block; false
-- otherwise) and the block was delivered by the gateway. Kept with its block to be checked
-- for values found elsewhere once the whole body is known (plan_edits).
local function check_sealed(plan, text, block)
  local matches, err = plan.catalog:scan(text)
  if err then
    plan.err = err
    return
  end
  if holds_identifier(matches) then
    if block then
      return needs_trust(plan, block)
    end
    plan.refused = REFUSED_THINKING
    return
  end
  local n = #plan.sealed + 1
  plan.sealed[n], plan.sealed_blocks[n] = text, block
end

-- Keeps a string that may be rewritten, with its catalog matches, and its findings. first and
-- last are its quotes in the body (false for a text outside it, kept in slot), b64: the string
-- is the decoding of base64 data, encoded again when rewritten.
local function keep(plan, text, matches, first, last, b64, slot)
  local n = plan.strings + 1
  plan.strings = n
  plan.firsts[n], plan.lasts[n], plan.texts[n] = first, last, text
  plan.found[n] = matches or false
  plan.b64[n], plan.slots[n] = b64, slot
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

-- Scans a text that may be rewritten (key: the name of the value, for keyed_match) and keeps
-- it. Returns true, or nil, err.
local function scan_text(plan, text, key, first, last, b64, slot)
  local matches, err = plan.catalog:scan(text)
  if err then
    return nil, err
  end
  if key and #text <= KEYED_VALUE_MAX then
    local keyed
    keyed, err = keyed_match(plan.catalog, key, text)
    if err then
      return nil, err
    end
    if keyed then
      matches = with_keyed_match(matches, keyed)
    end
  end
  -- Every maskable string is kept for the pass over repeated originals (plan_edits).
  keep(plan, text, matches, first, last, b64, slot)
  return true
end

-- base64 data is not decoded (megabytes of media) but checked as it is: nothing outside the
-- alphabet of base64 passes, so no identifier with a hyphen, dot, colon or space hides there,
-- and the catalog's patterns that can be written in that alphabet (access key IDs, IAM unique
-- IDs, ...: catalog.base64) are searched, which random base64 never matches.
local function check_base64(plan, text)
  local bad, _, err = re_find(text, "[^A-Za-z0-9+/=\r\n]", "jo")
  if bad then
    plan.refused = REFUSED_BASE64
    return
  end
  local in_base64 = plan.catalog.base64
  local matches
  if not err and in_base64 then
    matches, err = in_base64:scan(text)
  end
  if err then
    plan.err = err
  elseif matches then
    plan.refused = REFUSED_IN_BASE64
  end
end

-- field: the string is the value of an API field (a structural key), "data" or "text_data"
-- for base64 data, "sealed" or "sealed_text" for a string of an assistant thinking block
-- (block), or "number" for the text of a number; it is never rewritten, so an identifier in
-- it refuses the whole request (text_data is decoded and masked instead; a thinking block's
-- covered fields may pass, see check_sealed). key: the key of a value whose name may say what
-- the value is.
local function collect(plan, first, last, escaped, _, field, key, block)
  if plan.refused or plan.err then
    return
  end
  local raw = plan.raw
  local text = sub(raw, first + 1, last - 1)
  if escaped then
    text = json_string.decode(text)
  end

  if field == "data" then
    return check_base64(plan, text)
  end

  if field == "text_data" then
    local decoded = decode_base64((gsub(text, "[\r\n]", "")))
    if not decoded then
      plan.refused = REFUSED_TEXT_DOCUMENT
      return
    end
    local ok, err = scan_text(plan, decoded, nil, first, last, true)
    plan.err = not ok and err or nil
    return
  end

  if field == "number" then
    local keyed, err = keyed_match(plan.catalog, key, text)
    if keyed then
      plan.refused = REFUSED_NUMBER
    end
    plan.err = err
    return
  end

  if field == "sealed" or field == "sealed_text" then
    return check_sealed(plan, text, field == "sealed_text" and block)
  end

  -- API field values repeat ("type": "text" a thousand times): each is scanned once.
  local clean = plan.clean
  if field and clean[text] then
    return
  end

  if field then
    local matches, err = plan.catalog:scan(text)
    if err then
      plan.err = err
      return
    end
    if matches then
      plan.refused = "an AWS identifier in the API field '" .. field .. "' cannot be masked; "
        .. "the request was not forwarded"
      return
    end
    clean[text] = true
    return
  end

  local ok, err = scan_text(plan, text, key, first, last)
  plan.err = not ok and err or nil
end

-- The edits of a plan: every maskable string with its catalog matches and, once the body held
-- an identifier, every bounded occurrence of a value found anywhere in it (aws_masker.repeats):
-- a value found only by its context goes nowhere in clear. Bodies without one skip the pass.
-- A sealed string (thinking) holding such a value needs its block's digest known, or refuses
-- the request. Texts outside the body
-- get their matches in plan.text_matches.
local function plan_edits(plan)
  local edits, findings = plan.edits, plan.findings
  if #findings == 0 then
    return
  end
  local set = repeats.new(findings)
  local sealed, blocks = plan.sealed, plan.sealed_blocks
  for k = 1, #sealed do
    if holds_identifier(repeats.extend(set, sealed[k], nil)) then
      if not blocks[k] then
        plan.refused = REFUSED_THINKING
        return
      end
      needs_trust(plan, blocks[k])
      if plan.refused then
        return
      end
    end
  end
  local firsts, lasts, texts, found = plan.firsts, plan.lasts, plan.texts, plan.found
  for k = 1, plan.strings do
    local text = texts[k]
    local matches = repeats.extend(set, text, found[k])
    if matches then
      if firsts[k] then
        edits[#edits + 1] = { first = firsts[k], last = lasts[k], text = text,
          matches = matches, b64 = plan.b64[k] }
      else
        plan.text_matches[plan.slots[k]] = matches
      end
    end
  end
end

-- Finds every identifier in a JSON request body (nil for none) and in texts, a list of other
-- strings of the request to mask with it ({ text =, key = }: header values, key naming the
-- value as a JSON key would). Returns a plan { edits = {...}, text_matches = { [i] = matches
-- of texts[i] }, findings = { {code, value, name, ...}, ... }, digests = { hex, ... } } or nil,
-- err and, when the client is at fault (invalid JSON, an identifier where it cannot be masked),
-- true. findings lists each distinct (code, value) once, in order of first appearance; digests
-- the assistant thinking blocks forwarded only if the scope knows them (see needs_trust).
function _M.scan(raw, catalog, texts)
  local plan = { raw = raw or "", catalog = catalog, edits = {}, findings = {}, index = {},
    clean = {}, strings = 0, firsts = {}, lasts = {}, texts = {}, found = {}, b64 = {},
    slots = {}, sealed = {}, sealed_blocks = {}, digests = {}, trusted = {},
    text_matches = {} }

  if raw then
    local doc, err = _M.decode(raw)
    if doc == nil then
      return nil, "malformed JSON body: " .. err, true
    end
    local ok
    ok, err = _M.walk(raw, doc, true, collect, plan)
    if not ok then
      return nil, "malformed JSON body: " .. err, true
    end
  end
  if texts then
    for i = 1, #texts do
      if plan.refused or plan.err then
        break
      end
      local ok, err = scan_text(plan, texts[i].text, texts[i].key, false, false, false, i)
      plan.err = not ok and err or nil
    end
  end
  if plan.err then
    return nil, plan.err
  end
  if not plan.refused then
    plan_edits(plan)
  end
  if plan.refused then
    return nil, plan.refused, true
  end
  return plan
end

-- A text with its matches replaced: tokens[m.finding] for each match m.
local function replace(text, matches, tokens)
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
  return concat(parts, "", 1, p)
end

-- texts[i] of a plan (see scan) with tokens in place of what it held.
function _M.rewrite_text(plan, i, text, tokens)
  local matches = plan.text_matches[i]
  if not matches then
    return text
  end
  return replace(text, matches, tokens)
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
    local masked = replace(edit.text, edit.matches, tokens)
    if edit.b64 then
      masked = encode_base64(masked)
    end
    n = n + 1
    out[n] = sub(raw, pos, edit.first)
    n = n + 1
    out[n] = json_string.encode(masked)
    pos = edit.last
  end
  n = n + 1
  out[n] = sub(raw, pos)
  return concat(out, "", 1, n)
end

return _M
