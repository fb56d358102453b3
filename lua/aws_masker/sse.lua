-- Restoring tokens in a server-sent event stream, event by event, as the chunks arrive.
--
-- Chunks are cut into whole events (so an event or a UTF-8 character split across chunks is
-- seen whole). text_delta.text and input_json_delta.partial_json keep a per-content-block carry:
-- a tail that may be the start of a token is held back and prepended to the next delta of the
-- same block (or sent before its content_block_stop), so a token split across events is
-- restored whole. Thinking and signature deltas pass untouched; other events get a plain token
-- replace. At most one event and a carry of a few bytes per block are held, never the stream.

local cjson = require "cjson.safe"
local json_string = require "aws_masker.json_string"

local re_find = ngx.re.find
local find = string.find
local byte = string.byte
local sub = string.sub
local format = string.format
local concat = table.concat
local sort = table.sort
local pairs = pairs
local type = type
local floor = math.floor
local next = next
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

-- An event larger than this without its blank line is passed on as it is (plain replace),
-- so a broken upstream cannot make the gateway buffer without bound.
_M.MAX_EVENT_BYTES = 1024 * 1024

-- The longest tail of a text that may still grow into a token. Tokens are far shorter than
-- the window, so no token can start before it and end after.
local PARTIAL_TOKEN = [[A(?:W(?:S(?:_(?:[A-Z][A-Z0-9_]*)?)?)?)?\z]]
local HOLD_WINDOW = 64

local CARRIED_FIELDS = { text_delta = "text", input_json_delta = "partial_json" }
local UNTOUCHED_DELTAS = { thinking_delta = true, signature_delta = true }
local UNTOUCHED_BLOCKS = { thinking = true, redacted_thinking = true }

local LF, CR = byte("\n"), byte("\r")

-- restorer: an aws_masker.unmask object for this request.
function _M.new(restorer)
  return setmetatable({
    restorer = restorer,
    pending = "",
    search_from = 1,
    carries = {},  -- content block index -> { kind =, field =, text = }
    find_ctx = {},
    oversized = 0,
    out = {},  -- the events of one feed, sent = how many
    sent = 0,
  }, mt)
end

-- Offset of the last byte of the first complete event in buf (its blank line), or nil.
local function event_end(buf, from)
  local len = #buf
  while true do
    local k = find(buf, "\n", from, true)
    if not k or k == len then
      return nil, k or len
    end
    local b = byte(buf, k + 1)
    if b == LF then
      return k + 1
    end
    if b == CR then
      if k + 1 == len then
        return nil, k
      end
      if byte(buf, k + 2) == LF then
        return k + 2
      end
    end
    from = k + 1
  end
end

-- Locates the single data line of an event: first and last offset of its value, or nil.
local function data_value(ev)
  local first, last
  local pos, len = 1, #ev
  while pos <= len do
    local nl = find(ev, "\n", pos, true) or len + 1
    if sub(ev, pos, pos + 4) == "data:" then
      if first then
        return nil -- several data lines: not an API event shape we rewrite
      end
      first = pos + 5
      if byte(ev, first) == 32 then
        first = first + 1
      end
      last = nl - 1
      if last >= first and byte(ev, last) == CR then
        last = last - 1
      end
    end
    pos = nl + 1
  end
  return first, last
end
_M.data_value = data_value

local function number_text(n)
  if n == floor(n) and n >= 0 and n < 2 ^ 53 then
    return format("%d", n)
  end
  return format("%.17g", n)
end

local function delta_data(doc, index, kind, field, value)
  local delta = doc.delta
  local canonical = true
  for k in pairs(doc) do
    if k ~= "type" and k ~= "index" and k ~= "delta" then
      canonical = false
    end
  end
  for k in pairs(delta) do
    if k ~= "type" and k ~= field then
      canonical = false
    end
  end
  if canonical and type(index) == "number" then
    return '{"type":"content_block_delta","index":' .. number_text(index)
      .. ',"delta":{"type":"' .. kind .. '","' .. field .. '":"'
      .. json_string.encode(value) .. '"}}'
  end
  delta[field] = value
  return cjson.encode(doc)
end

local function restore_carried(self, s, kind)
  if kind == "input_json_delta" then
    return self.restorer:json_text(s)
  end
  return self.restorer:text(s)
end

local function flush_carry(self, index)
  local carry = self.carries[index]
  if not carry or carry.text == "" then
    return ""
  end
  local text = restore_carried(self, carry.text, carry.kind) or carry.text
  carry.text = ""
  local data = '{"type":"content_block_delta","index":' .. number_text(index)
    .. ',"delta":{"type":"' .. carry.kind .. '","' .. carry.field .. '":"'
    .. json_string.encode(text) .. '"}}'
  return "event: content_block_delta\ndata: " .. data .. "\n\n"
end

local function carried_delta(self, ev, first, last, doc, kind)
  local field = CARRIED_FIELDS[kind]
  local delta = doc.delta
  local value = delta[field]
  local index = doc.index
  if type(value) ~= "string" or type(index) ~= "number" then
    return self.restorer:json_text(ev)
  end

  local carry = self.carries[index]
  if not carry then
    carry = { kind = kind, field = field, text = "" }
    self.carries[index] = carry
  end
  local text = carry.text .. value
  carry.kind, carry.field = kind, field

  local ctx = self.find_ctx
  ctx.pos = #text > HOLD_WINDOW and #text - HOLD_WINDOW + 1 or 1
  local hold = re_find(text, PARTIAL_TOKEN, "jo", ctx)
  if hold then
    carry.text = sub(text, hold)
    text = sub(text, 1, hold - 1)
  else
    carry.text = ""
  end

  local restored, err = restore_carried(self, text, kind)
  if not restored then
    return nil, err
  end
  return sub(ev, 1, first - 1) .. delta_data(doc, index, kind, field, restored)
    .. sub(ev, last + 1)
end

local function process_event(self, ev)
  local first, last = data_value(ev)
  if not first or last < first then
    return self.restorer:text(ev)
  end

  local doc = cjson.decode(sub(ev, first, last))
  if type(doc) ~= "table" then
    return self.restorer:text(ev)
  end

  local t = doc.type
  if t == "content_block_delta" and type(doc.delta) == "table" then
    local kind = doc.delta.type
    if UNTOUCHED_DELTAS[kind] then
      return ev
    end
    if CARRIED_FIELDS[kind] then
      return carried_delta(self, ev, first, last, doc, kind)
    end

  elseif t == "content_block_start" and type(doc.content_block) == "table" then
    if UNTOUCHED_BLOCKS[doc.content_block.type] then
      return ev
    end

  elseif t == "content_block_stop" and doc.index ~= nil then
    local out, err = self.restorer:json_text(ev)
    if not out then
      return nil, err
    end
    return flush_carry(self, doc.index) .. out
  end

  return self.restorer:json_text(ev)
end

-- Appends chunk to what holder keeps (holder.pending, holder.search_from) and calls
-- each(arg, event) for every whole event, in order; keeps the unfinished rest. Returns true,
-- or nil and the error of the first call of each that returned nil, err.
function _M.cut(holder, chunk, each, arg)
  local buf = holder.pending
  if chunk and chunk ~= "" then
    buf = buf .. chunk
  end

  local pos, from = 1, holder.search_from
  while true do
    local stop, scanned = event_end(buf, from)
    if not stop then
      from = scanned
      break
    end
    local ok, err = each(arg, sub(buf, pos, stop))
    if not ok then
      return nil, err
    end
    pos = stop + 1
    from = pos
  end

  if pos > 1 then
    buf = sub(buf, pos)
    from = from - pos + 1
  end
  if from < 1 then
    from = 1
  end
  holder.pending, holder.search_from = buf, from
  return true
end

local function send_event(self, ev)
  local out, err = process_event(self, ev)
  if not out then
    return nil, err
  end
  local n = self.sent + 1
  self.out[n], self.sent = out, n
  return true
end

-- Takes the next chunk of the stream, returns what can be sent now (possibly "").
function _M:feed(chunk)
  self.sent = 0
  local ok, err = _M.cut(self, chunk, send_event, self)
  if not ok then
    return nil, err
  end

  local buf = self.pending
  if #buf > _M.MAX_EVENT_BYTES then
    self.oversized = self.oversized + 1
    self.sent = self.sent + 1
    self.out[self.sent] = self.restorer:text(buf) or buf
    self.pending, self.search_from = "", 1
  end

  if self.sent == 0 then
    return ""
  end
  return concat(self.out, "", 1, self.sent)
end

-- Ends the stream: returns the unterminated last event, if any, and every held carry.
-- discard_partial: the stream broke off (its source is corrupt), so the unterminated event is
-- dropped rather than passed on as if it were whole.
function _M:finish(discard_partial)
  local out = ""
  if discard_partial then
    self.pending, self.search_from = "", 1
  end
  if self.pending ~= "" then
    local err
    out, err = process_event(self, self.pending)
    if not out then
      return nil, err
    end
    self.pending, self.search_from = "", 1
  end

  if next(self.carries) then
    local indexes = {}
    for index in pairs(self.carries) do
      indexes[#indexes + 1] = index
    end
    sort(indexes)
    for i = 1, #indexes do
      out = out .. flush_carry(self, indexes[i])
    end
  end
  return out
end

return _M
