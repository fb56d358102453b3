-- The token scope of a client: tokens issued under one credential never restore under another.

local hmac_sha1 = ngx.hmac_sha1
local byte = string.byte
local format = string.format

local _M = {}

-- Bytes of the HMAC kept: 10 bytes, 20 hex characters.
local SCOPE_BYTES = 10

-- scope = first 20 hex characters of hmac_sha1(scope_secret, credential).
function _M.from_credential(scope_secret, credential)
  local mac = hmac_sha1(scope_secret, credential or "")
  return format("%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", byte(mac, 1, SCOPE_BYTES))
end

-- The credential of a request: the x-api-key header, else Authorization (either may be nil).
function _M.credential(api_key, authorization)
  if api_key and api_key ~= "" then
    return api_key
  end
  return authorization or ""
end

return _M
