-- Error bodies in the shape the Anthropic API uses, so clients handle them as API errors.

local json_string = require "aws_masker.json_string"

local _M = {}

-- status -> Anthropic error type, for the statuses the gateway produces itself.
_M.TYPES = {
  [400] = "invalid_request_error",
  [403] = "permission_error",
  [413] = "request_too_large",
  [500] = "api_error",
  [502] = "api_error",
  [503] = "api_error",
}

-- Returns the JSON error body for a status and a message. The message names a cause, never a
-- value from the request.
function _M.body(status, message)
  local kind = _M.TYPES[status] or "api_error"
  return '{"type":"error","error":{"type":"' .. kind .. '","message":"'
    .. json_string.encode(message) .. '"}}'
end

return _M
