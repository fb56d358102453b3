-- Decoding a gzip or deflate response body chunk by chunk, as it arrives.
--
--   local coding, unsupported = inflate.coding(content_encoding)
--     -- "identity", "gzip" or "deflate"; or nil and the coding the gateway cannot decode
--   local decoder = inflate.new(coding)
--   local data, err = decoder:feed(chunk, eof) -- the bytes decoded so far (possibly "")
--
-- zlib (Debian's lua-zlib) does the decoding; this module only cuts the body into streams:
-- a gzip body may hold several members one after another (RFC 1952), and "deflate" is a zlib
-- stream (RFC 1950), or, from some servers, raw deflate data, told apart by the zlib header.
-- Input is never held beyond the two bytes that tell those apart; zlib keeps its own window.
-- A body that ends inside a stream, or carries bytes zlib rejects, is an error: the caller
-- gets nil and a message naming the cause, never the data.

local zlib = require "zlib"

local byte = string.byte
local sub = string.sub
local gsub = string.gsub
local lower = string.lower
local gmatch = string.gmatch
local concat = table.concat
local pcall = pcall
local type = type
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

-- Content-Encoding names (lower case) -> the decoder for them.
local CODINGS = { identity = "identity", gzip = "gzip", ["x-gzip"] = "gzip",
  deflate = "deflate" }

-- zlib window bits: 15 with 16 added reads the gzip wrapper only, alone the zlib wrapper,
-- negated raw deflate data.
local GZIP_WINDOW = 31
local ZLIB_WINDOW = 15
local RAW_WINDOW = -15

-- Maps a Content-Encoding header (a string, or the table of a repeated header) to the decoder
-- it needs: "identity", "gzip" or "deflate". Returns nil and the coding named when the body
-- cannot be decoded here (br, zstd, compress, or several codings applied one on another).
function _M.coding(content_encoding)
  if type(content_encoding) == "table" then
    content_encoding = concat(content_encoding, ",")
  end
  if not content_encoding then
    return "identity"
  end

  local found
  for item in gmatch(content_encoding, "[^,]+") do
    local name = lower((gsub(item, "^%s*(.-)%s*$", "%1")))
    if name ~= "" and name ~= "identity" then
      local coding = CODINGS[name]
      if not coding or found then
        return nil, found and content_encoding or name
      end
      found = coding
    end
  end
  return found or "identity"
end

-- coding: "gzip" or "deflate".
function _M.new(coding)
  return setmetatable({
    coding = coding,
    stream = nil,    -- the zlib stream being read, nil between streams
    consumed = 0,    -- input bytes that stream has taken so far
    ended = false,   -- a stream ended and nothing followed it yet
    held = "",       -- first bytes of a deflate stream, too few to tell its wrapper
    streams = 0,     -- streams read to their end (gzip members)
  }, mt)
end

-- Whether two bytes start a zlib stream: deflate method, and the header check of RFC 1950.
local function zlib_header(data)
  local cmf, flg = byte(data, 1, 2)
  return cmf % 16 == 8 and (cmf * 256 + flg) % 31 == 0
end

-- lua-zlib raises "InvalidInput: <zlib message> at lua_zlib.c line N"; the location is noise.
local function zlib_error(self, err)
  local cause = gsub(type(err) == "string" and err or "zlib error", " at %S+ line %d+$", "")
  return nil, "corrupt " .. self.coding .. " data in the upstream answer (" .. cause .. ")"
end

-- Takes the next chunk of the encoded body (eof: it is the last; chunk may be nil or "").
-- Returns the decoded bytes it completes (possibly ""), or nil and an error.
function _M:feed(chunk, eof)
  local data = chunk or ""
  if self.held ~= "" then
    data = self.held .. data
    self.held = ""
  end

  local out, n = nil, 0
  while data ~= "" do
    if not self.stream then
      if self.ended and self.coding ~= "gzip" then
        return nil, "data after the end of the " .. self.coding .. " stream in the upstream answer"
      end
      local window = GZIP_WINDOW
      if self.coding == "deflate" then
        if #data < 2 and not eof then
          self.held = data
          break
        end
        window = #data >= 2 and zlib_header(data) and ZLIB_WINDOW or RAW_WINDOW
      end
      self.stream, self.consumed, self.ended = zlib.inflate(window), 0, false
    end

    local ok, piece, ended, total_in = pcall(self.stream, data)
    if not ok then
      self.stream = nil
      return zlib_error(self, piece)
    end
    if piece ~= "" then
      out = out or {}
      n = n + 1
      out[n] = piece
    end
    if ended then
      -- What the stream did not take starts the next one (a further gzip member).
      data = sub(data, total_in - self.consumed + 1)
      self.stream, self.ended = nil, true
      self.streams = self.streams + 1
    else
      self.consumed = total_in
      data = ""
    end
  end

  if eof and (self.stream or self.held ~= "") then
    self.stream, self.held = nil, ""
    return nil, "the upstream answer ended inside its " .. self.coding .. " data (truncated)"
  end
  if not out then
    return ""
  end
  return concat(out, "", 1, n)
end

return _M
