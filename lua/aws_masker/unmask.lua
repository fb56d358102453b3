-- Restoring originals in responses, from the token -> original map of one request.
--
-- Only the tokens this request issued are restored (no store lookups in a body filter); any
-- other token-shaped text stays as it is and is counted as unknown.

local json_body = require "aws_masker.json_body"
local json_string = require "aws_masker.json_string"

local re_gsub = ngx.re.gsub
local find = string.find
local sub = string.sub
local concat = table.concat
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

_M.TOKEN_REGEX = [[AWS_[A-Z][A-Z0-9_]*_[0-9]{6}(?![0-9])]]
local TOKEN_REGEX = _M.TOKEN_REGEX

-- gsub callbacks read the restorer in use from here: set just before each call, which never
-- yields, so one shared function serves every request without a closure each.
local current, current_escaped

local function replace_token(m)
  local self = current
  local token = m[0]
  local original = self.originals[token]
  if not original then
    self.unknown = self.unknown + 1
    return token
  end

  self.restored = self.restored + 1
  if not current_escaped then
    return original
  end
  local escaped = self.escaped[token]
  if not escaped then
    escaped = json_string.encode(original)
    self.escaped[token] = escaped
  end
  return escaped
end

-- originals: token -> original for this request.
function _M.new(originals)
  return setmetatable({ originals = originals, escaped = {}, restored = 0, unknown = 0 }, mt)
end

local function replace(self, s, escaped)
  if not find(s, "AWS_", 1, true) then
    return s
  end
  current, current_escaped = self, escaped
  local out, _, err = re_gsub(s, TOKEN_REGEX, replace_token, "jo")
  current = nil
  if not out then
    return nil, "token restore failed: " .. err
  end
  return out
end

-- Restores tokens in plain text (originals as they are).
function _M:text(s)
  return replace(self, s, false)
end

-- Restores tokens inside JSON text (originals JSON-escaped, for use within a string).
function _M:json_text(s)
  return replace(self, s, true)
end

local function restore_string(state, first, last)
  local raw = state.raw
  local content = sub(raw, first + 1, last - 1)
  if not find(content, "AWS_", 1, true) then
    return
  end
  local out, err = replace(state.restorer, content, true)
  if not out then
    state.err = err
    return
  end
  if out ~= content then
    local parts, n = state.parts, state.n
    parts[n + 1] = sub(raw, state.pos, first)
    parts[n + 2] = out
    state.n = n + 2
    state.pos = last
  end
end

-- Restores tokens in a JSON response body, leaving thinking blocks untouched. A body that is
-- not JSON gets a plain replace.
function _M:json_body(raw)
  if not find(raw, "AWS_", 1, true) then
    return raw
  end
  local doc = json_body.decode(raw)
  if doc == nil then
    return replace(self, raw, false)
  end

  local state = { raw = raw, restorer = self, parts = {}, n = 0, pos = 1 }
  local ok, err = json_body.walk(raw, doc, false, restore_string, state)
  if not ok then
    return nil, err
  end
  if state.err then
    return nil, state.err
  end
  if state.n == 0 then
    return raw
  end
  state.parts[state.n + 1] = sub(raw, state.pos)
  return concat(state.parts, "", 1, state.n + 1)
end

return _M
