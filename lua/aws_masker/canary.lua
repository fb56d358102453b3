-- The masking canary: proves on a live gateway that a request is masked and its answer
-- restored, without sending anything to the upstream (no API tokens are spent).
--
-- A request carrying the header x-aws-masker-canary with the gateway's canary secret is masked
-- as usual, under a scope of its own, and then answered by the gateway itself instead of being
-- proxied: a Messages-API-shaped answer whose text is the masked text of the last user message
-- (as the upstream would have received it), JSON or, when the body asks to stream, an SSE
-- stream cut into small deltas. The answer goes out through the normal response filters, which
-- restore the tokens; the body that would have gone upstream travels back, base64, in the
-- x-aws-masker-canary-upstream-body response header, for the caller to check.
--
-- The header never reaches the upstream: a request with the right secret is answered here, one
-- with a wrong secret (or to a gateway without one) is refused with 403. Requests without the
-- header are not affected.

local cjson = require "cjson.safe"
local errors = require "aws_masker.errors"
local scope_mod = require "aws_masker.scope"

local bit = require "bit"
local ngx = ngx
local req = ngx.req
local sha1_bin = ngx.sha1_bin
local encode_base64 = ngx.encode_base64
local byte = string.byte
local sub = string.sub
local concat = table.concat
local type = type
local bxor, bor = bit.bxor, bit.bor

local _M = {}

_M.HEADER = "x-aws-masker-canary"
_M.BODY_HEADER = "x-aws-masker-canary-upstream-body"
-- The scope label of canary tokens: they never share numbering or keys with a client's.
_M.SCOPE_LABEL = "aws_masker:canary"
-- A larger body would not fit a response header.
_M.MAX_BODY = 16384
-- Characters per text delta of the streamed answer: tokens are split across events.
local DELTA_CHARS = 7

local mt = { __index = _M }

-- secret: the canary secret ("" or nil disables the canary); scope_secret: the HMAC key of scopes.
function _M.new(secret, scope_secret)
  return setmetatable({
    secret_digest = type(secret) == "string" and secret ~= "" and sha1_bin(secret) or nil,
    scope = scope_mod.from_value(scope_secret, _M.SCOPE_LABEL),
  }, mt)
end

-- Compares digests byte by byte without an early exit, so timing does not tell how much of a
-- guessed secret was right.
local function same_digest(a, b)
  local diff = 0
  for i = 1, #a do
    diff = bor(diff, bxor(byte(a, i), byte(b, i)))
  end
  return diff == 0
end

-- For the access phase: nil when the request is no canary; true (and st.canary, st.scope set)
-- for a canary with the right secret; false and a failure (403) otherwise.
function _M:classify(st, header_value)
  if header_value == nil then
    return nil
  end
  req.clear_header(_M.HEADER)
  if type(header_value) ~= "string" or not self.secret_digest
      or not same_digest(self.secret_digest, sha1_bin(header_value)) then
    st.status = 403
    st.error = "canary refused"
    local message = "the canary header is not accepted by this gateway; nothing was forwarded"
    return false, { status = 403, body = errors.body(403, message) }
  end
  st.canary = true
  st.scope = self.scope
  return true
end

local function last_user_text(request)
  local messages = type(request) == "table" and request.messages
  local last = type(messages) == "table" and messages[#messages]
  local content = type(last) == "table" and last.content
  if type(content) == "string" then
    return content
  end
  local parts = {}
  if type(content) == "table" then
    for i = 1, #content do
      local block = content[i]
      if type(block) == "table" and block.type == "text" and type(block.text) == "string" then
        parts[#parts + 1] = block.text
      end
    end
  end
  return concat(parts)
end

local function sse_event(name, data)
  return "event: " .. name .. "\ndata: " .. cjson.encode(data) .. "\n\n"
end

local function send_stream(text, model)
  ngx.header["Content-Type"] = "text/event-stream"
  ngx.print(sse_event("message_start", { type = "message_start", message = {
    id = "msg_aws_masker_canary", type = "message", role = "assistant", model = model,
    content = {}, usage = { input_tokens = 0, output_tokens = 0 } } }))
  ngx.print(sse_event("content_block_start", { type = "content_block_start", index = 0,
    content_block = { type = "text", text = "" } }))
  for i = 1, #text, DELTA_CHARS do
    -- Each delta is its own chunk through the body filter, as an upstream's writes would be.
    ngx.print(sse_event("content_block_delta", { type = "content_block_delta", index = 0,
      delta = { type = "text_delta", text = sub(text, i, i + DELTA_CHARS - 1) } }))
    ngx.flush(true)
  end
  ngx.print(sse_event("content_block_stop", { type = "content_block_stop", index = 0 }))
  ngx.print(sse_event("message_delta", { type = "message_delta",
    delta = { stop_reason = "end_turn" }, usage = { output_tokens = 0 } }))
  ngx.print(sse_event("message_stop", { type = "message_stop" }))
end

-- For the access phase, after masking: answers the canary with what the upstream would have
-- received. body is the upstream-bound body (masked).
function _M.answer(body)
  if #body > _M.MAX_BODY then
    local message = "a canary body is at most " .. _M.MAX_BODY .. " bytes"
    return false, { status = 400, body = errors.body(400, message) }
  end
  local request = cjson.decode(body)
  local text = last_user_text(request)
  local model = type(request) == "table" and type(request.model) == "string" and request.model
    or "aws-masker-canary"

  ngx.status = 200
  ngx.header[_M.BODY_HEADER] = encode_base64(body)
  ngx.header["Cache-Control"] = "no-store"
  if type(request) == "table" and request.stream == true then
    send_stream(text, model)
  else
    ngx.header["Content-Type"] = "application/json"
    ngx.print(cjson.encode({ id = "msg_aws_masker_canary", type = "message",
      role = "assistant", model = model, content = { { type = "text", text = text } },
      stop_reason = "end_turn", stop_sequence = cjson.null,
      usage = { input_tokens = 0, output_tokens = 0 } }))
  end
  return ngx.exit(200)
end

return _M
