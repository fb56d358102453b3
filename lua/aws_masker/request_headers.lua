-- Request headers: which are masked with the body, which are only checked, which pass as sent.
--
-- An engine forwards the client's headers upstream, so their values are content like the
-- body's strings: scanned with the same catalog, masked with the same tokens in the same scope
-- (aws_masker.json_body takes them as texts beside the body: one store call for both). Two
-- kinds are never rewritten. Passed ones are not scanned at all: the client's credentials for
-- the API (a token in their place would break authentication, and the scope is derived from
-- them) and the hop's own headers, which the gateway or nginx sets, clears or checks itself
-- (the upstream never gets the client's Host). Checked ones are scanned and an identifier in
-- them refuses the request: the API or HTTP reads their value, so a token there would change
-- what the request says.

local json_body = require "aws_masker.json_body"

local lower = string.lower
local find = string.find
local pairs = pairs
local type = type
local sort = table.sort

local _M = {}

-- Most headers an adapter reads; an engine that stops short of them all refuses the request.
_M.MAX_HEADERS = 1000
_M.TOO_MANY = "the request has more than " .. _M.MAX_HEADERS .. " headers; "
  .. "the request was not forwarded"

_M.PASSED = {
  authorization = true, ["x-api-key"] = true, ["proxy-authorization"] = true,
  host = true, connection = true, ["content-length"] = true, ["transfer-encoding"] = true,
  ["accept-encoding"] = true,
}

-- And every name starting with "anthropic-" (anthropic-version, anthropic-beta, ...).
_M.CHECKED = {
  ["content-type"] = true, ["content-encoding"] = true, accept = true, expect = true,
  te = true, upgrade = true, ["keep-alive"] = true,
}

local function checked(name)
  return _M.CHECKED[name] or find(name, "^anthropic%-") ~= nil
end

-- The values of a header as a list (an engine gives a list for a name sent more than once).
local function values_of(value)
  if type(value) == "table" then
    return value
  end
  return { value }
end

-- Splits headers (name -> value or list of values, as an engine's get_headers returns them)
-- by the rules above. Returns the texts to mask with the body, a list of
-- { text =, key =, name =, item = } (key: the lower-case name, which may name the value as a
-- JSON key would; item: the value's place in a list, or nil), in name order; or nil, the
-- refusal and true for an identifier in a checked header; or nil and a scan error.
function _M.texts(headers, catalog)
  local names = {}
  for name in pairs(headers) do
    if type(name) == "string" then
      names[#names + 1] = name
    end
  end
  sort(names)

  local texts = {}
  for n = 1, #names do
    local name = names[n]
    local key = lower(name)
    if not _M.PASSED[key] then
      local value = headers[name]
      local values = values_of(value)
      for item = 1, #values do
        local text = values[item]
        if type(text) == "string" and text ~= "" then
          if checked(key) then
            local matches, err = catalog:scan(text)
            if err then
              return nil, err
            end
            if matches then
              return nil, "an AWS identifier in the request header '" .. key .. "' cannot be "
                .. "masked; the request was not forwarded", true
            end
          else
            texts[#texts + 1] = { text = text, key = key, name = name,
              item = type(value) == "table" and item or nil }
          end
        end
      end
    end
  end
  return texts
end

-- The headers to set upstream: name -> masked value (a list for a name sent more than once),
-- only for those that changed; nil when none did. plan and tokens: json_body's, of the body
-- scanned with texts.
function _M.masked(headers, texts, plan, tokens)
  local out
  for i = 1, #texts do
    local t = texts[i]
    local masked = json_body.rewrite_text(plan, i, t.text, tokens)
    if masked ~= t.text then
      out = out or {}
      if t.item then
        local list = out[t.name]
        if not list then
          list = {}
          local values = headers[t.name]
          for k = 1, #values do
            list[k] = values[k]
          end
          out[t.name] = list
        end
        list[t.item] = masked
      else
        out[t.name] = masked
      end
    end
  end
  return out
end

return _M
