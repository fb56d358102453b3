-- The token scope of a request: tokens are numbered and stored per scope.
--
-- scope_by chooses what the scope is the HMAC of: "credential" (the client's API key, the
-- default), "header" (the value of a header an authenticating proxy sets, e.g. a team), or
-- "global" (a fixed label: every client shares one numbering and one set of Redis keys).

local hmac_sha1 = ngx.hmac_sha1
local byte = string.byte
local format = string.format
local find = string.find
local type = type

local _M = {}

-- Bytes of the HMAC kept: 10 bytes, 20 hex characters.
local SCOPE_BYTES = 10

-- What the scope can be derived from.
_M.SCOPE_BY = { credential = true, header = true, global = true }

-- The fixed text whose HMAC is the scope of every request under scope_by "global".
_M.GLOBAL_LABEL = "aws_masker:global"

-- scope = first 20 hex characters of hmac_sha1(scope_secret, value).
function _M.from_value(scope_secret, value)
  local mac = hmac_sha1(scope_secret, value or "")
  return format("%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", byte(mac, 1, SCOPE_BYTES))
end

-- Whether a name can name the scope header: letters, digits and hyphens, the field names
-- nginx passes on by default (it drops names with underscores or other characters).
function _M.valid_header_name(name)
  return type(name) == "string" and find(name, "^[A-Za-z0-9-]+$") ~= nil
end

-- The credential of a request: the x-api-key header, else Authorization (either may be nil).
function _M.credential(api_key, authorization)
  if api_key and api_key ~= "" then
    return api_key
  end
  return authorization or ""
end

return _M
