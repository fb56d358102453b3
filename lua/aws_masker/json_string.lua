-- JSON string contents: decode escapes to bytes, encode bytes back to escaped contents.
--
-- Lone UTF-16 surrogates (legal in JSON, not in UTF-8) decode to their generalised 3-byte form
-- and encode back to the same \uXXXX escape, so a string survives decode/encode unchanged.

local byte = string.byte
local char = string.char
local sub = string.sub
local find = string.find
local gsub = string.gsub
local format = string.format
local tonumber = tonumber
local concat = table.concat
local floor = math.floor

-- PCRE (JIT) finds a byte of a class many times faster than a Lua pattern; ngx.re is there in
-- nginx and Kong, the Lua patterns below say the same where it is not.
local ngx_re = rawget(_G, "ngx") and ngx.re
local NEEDS_ESCAPE = [=[[\x00-\x1f"\\]]=]

local _M = {}

local SIMPLE_ESCAPES = {
  [34] = '"', [92] = "\\", [47] = "/",
  [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t",
}

local ENCODE_MAP = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
for c = 0, 31 do
  local ch = char(c)
  if not ENCODE_MAP[ch] then
    ENCODE_MAP[ch] = format("\\u%04x", c)
  end
end

local function utf8_char(cp)
  if cp < 0x80 then
    return char(cp)
  elseif cp < 0x800 then
    return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
              0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local buf = {} -- reused: decode never yields

-- Decodes the contents of a JSON string (without its quotes). The caller has validated the JSON.
function _M.decode(raw)
  local start = find(raw, "\\", 1, true)
  if not start then
    return raw
  end

  local n, pos, len = 0, 1, #raw
  while start do
    if start > pos then
      n = n + 1
      buf[n] = sub(raw, pos, start - 1)
    end

    local e = byte(raw, start + 1)
    if e == 117 then -- \uXXXX
      local cp = tonumber(sub(raw, start + 2, start + 5), 16) or 0xFFFD
      pos = start + 6
      if cp >= 0xD800 and cp <= 0xDBFF and sub(raw, pos, pos + 1) == "\\u" then
        local low = tonumber(sub(raw, pos + 2, pos + 5), 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
          pos = pos + 6
        end
      end
      n = n + 1
      buf[n] = utf8_char(cp)
    else
      n = n + 1
      buf[n] = SIMPLE_ESCAPES[e] or sub(raw, start + 1, start + 1)
      pos = start + 2
    end

    start = find(raw, "\\", pos, true)
  end

  if pos <= len then
    n = n + 1
    buf[n] = sub(raw, pos)
  end

  local out = concat(buf, "", 1, n)
  for i = 1, n do
    buf[i] = nil
  end
  return out
end

local function surrogate_escape(s)
  local b1, b2, b3 = byte(s, 1, 3)
  local cp = (b1 - 0xE0) * 0x1000 + (b2 - 0x80) * 0x40 + (b3 - 0x80)
  return format("\\u%04x", cp)
end

local function escape(m)
  return ENCODE_MAP[m[0]]
end

-- Encodes bytes as JSON string contents (without quotes). UTF-8 stays as it is; "/" is not
-- escaped.
function _M.encode(s)
  if ngx_re then
    if ngx_re.find(s, NEEDS_ESCAPE, "jo") then
      s = ngx_re.gsub(s, NEEDS_ESCAPE, escape, "jo")
    end
  elseif find(s, '[%z\1-\31"\\]') then
    s = gsub(s, '[%z\1-\31"\\]', ENCODE_MAP)
  end
  if find(s, "\237", 1, true) and find(s, "\237[\160-\191]") then
    s = gsub(s, "\237[\160-\191][\128-\191]", surrogate_escape)
  end
  return s
end

return _M
