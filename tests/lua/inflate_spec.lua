local inflate = require "aws_masker.inflate"
local zlib = require "zlib"

local function unhex(s)
  return (s:gsub("%x%x", function(h)
    return string.char(tonumber(h, 16))
  end))
end

-- Written by Python's gzip and zlib modules, so the decoder is not only checked against the
-- encoder of the library it uses itself.
local PY_GZIP = unhex("1f8b08000000000002034b4e4c3bbc52c1313c38ded5d928de00040cb900da8e0c"
  .. "9315000000")
local PY_GZIP_TEXT = "café AWS_EC2_000001\n"
local PY_RAW_DEFLATE = unhex("2b4a2c5748494dcb492c4955700c0f8e7775368a3700014300")
local PY_RAW_TEXT = "raw deflate AWS_EC2_000001"

-- window: 31 gzip, 15 zlib, -15 raw deflate.
local function compress(data, window)
  local stream = zlib.deflate(6, window)
  return (stream(data, "finish"))
end

-- Some text with repeats (so it compresses) and multi-byte characters.
local function sample(n)
  local parts = {}
  for i = 1, n do
    parts[i] = "event " .. i .. ": AWS_EC2_" .. string.format("%06d", i) .. " é😀\n"
  end
  return table.concat(parts)
end

-- Feeds the chunks one by one (the last with eof) and returns the decoded whole, or nil, err.
local function decode(coding, chunks)
  local decoder = inflate.new(coding)
  local out = {}
  for i, chunk in ipairs(chunks) do
    local data, err = decoder:feed(chunk, i == #chunks)
    if not data then
      return nil, err
    end
    out[#out + 1] = data
  end
  return table.concat(out), decoder
end

local function cut(s, offsets)
  local chunks, from = {}, 1
  for _, at in ipairs(offsets) do
    chunks[#chunks + 1] = s:sub(from, at)
    from = at + 1
  end
  chunks[#chunks + 1] = s:sub(from)
  return chunks
end

describe("aws_masker.inflate", function()
  it("names the decoder a Content-Encoding needs, or the coding it cannot decode", function()
    assert.equal("identity", inflate.coding(nil))
    assert.equal("identity", inflate.coding("identity"))
    assert.equal("identity", inflate.coding(""))
    assert.equal("gzip", inflate.coding("gzip"))
    assert.equal("gzip", inflate.coding(" X-GZIP "))
    assert.equal("gzip", inflate.coding({ "identity", "gzip" }))
    assert.equal("deflate", inflate.coding("Deflate"))
    assert.same({ nil, "br" }, { inflate.coding("br") })
    assert.same({ nil, "zstd" }, { inflate.coding("zstd") })
    assert.same({ nil, "compress" }, { inflate.coding("compress") })
    assert.same({ nil, "gzip, br" }, { inflate.coding("gzip, br") })
    assert.same({ nil, "deflate, gzip" }, { inflate.coding("deflate, gzip") })
  end)

  it("decodes gzip and raw deflate written by another encoder", function()
    assert.equal(PY_GZIP_TEXT, (decode("gzip", { PY_GZIP })))
    assert.equal(PY_RAW_TEXT, (decode("deflate", { PY_RAW_DEFLATE })))
  end)

  it("decodes a small gzip split at every byte offset, and byte by byte", function()
    local text = sample(3)
    local gz = compress(text, 31)
    for at = 0, #gz do
      local out, err = decode("gzip", cut(gz, { at }))
      assert.equal(text, out, "split at " .. at .. ": " .. tostring(err))
    end
    local bytes = {}
    for i = 1, #gz do
      bytes[i] = gz:sub(i, i)
    end
    assert.equal(text, (decode("gzip", bytes)))
  end)

  it("decodes zlib-wrapped and raw deflate split at every byte offset", function()
    local text = sample(3)
    for _, window in ipairs({ 15, -15 }) do
      local data = compress(text, window)
      for at = 0, #data do
        local out, err = decode("deflate", cut(data, { at }))
        assert.equal(text, out, "window " .. window .. " split at " .. at .. ": "
          .. tostring(err))
      end
    end
  end)

  it("decodes random multi-way splits of a larger body", function()
    math.randomseed(20240531)
    local text = sample(2000)
    for _, case in ipairs({ { "gzip", 31 }, { "deflate", 15 }, { "deflate", -15 } }) do
      local data = compress(text, case[2])
      for _ = 1, 25 do
        local offsets, at = {}, 0
        while true do
          at = at + math.random(1, 600)
          if at >= #data then
            break
          end
          offsets[#offsets + 1] = at
        end
        assert.equal(text, (decode(case[1], cut(data, offsets))))
      end
    end
  end)

  it("decodes a gzip of several members, split inside and between them", function()
    local parts = { sample(2), "", sample(40), "last member" }
    local gz = {}
    for i, part in ipairs(parts) do
      gz[i] = compress(part, 31)
    end
    local whole = table.concat(gz)
    local out, decoder = decode("gzip", { whole })
    assert.equal(table.concat(parts), out)
    assert.equal(4, decoder.streams)

    local boundary = #gz[1]
    for _, offsets in ipairs({ { boundary }, { boundary - 1 }, { boundary + 1 },
        { 3, boundary, boundary + #gz[2] + 5 } }) do
      assert.equal(table.concat(parts), (decode("gzip", cut(whole, offsets))))
    end
    for at = 0, #whole, 7 do
      assert.equal(table.concat(parts), (decode("gzip", cut(whole, { at }))))
    end
  end)

  it("decodes an empty body, and chunks that are empty or nil", function()
    assert.equal("", (decode("gzip", { "" })))
    assert.equal("", (decode("deflate", { nil })))
    local gz = compress("x", 31)
    assert.equal("x", (decode("gzip", { "", gz, "", "" })))
  end)

  it("refuses corrupt data with a message and never the data", function()
    local gz = compress(sample(50), 31)
    local flipped = gz:sub(1, 40) .. string.char((gz:byte(41) + 128) % 256) .. gz:sub(42)
    local bad_crc = gz:sub(1, #gz - 8) .. "\0\0\0\0" .. gz:sub(#gz - 3)
    for name, data in pairs({ flipped = flipped, bad_crc = bad_crc,
        not_gzip = "AWS_EC2_000001 plain text", deflate_as_gzip = compress("x", 15) }) do
      local out, err = decode("gzip", { data })
      assert.is_nil(out, name)
      assert.matches("^corrupt gzip data in the upstream answer %(", err, nil, name)
      assert.is_nil(err:find("AWS_EC2", 1, true), name)
      assert.is_nil(err:find("lua_zlib.c", 1, true), name)
    end
    local _, err = decode("deflate", { "\255\255\255\255 not deflate" })
    assert.matches("^corrupt deflate data", err)
  end)

  it("refuses a body cut before its end, and bytes after a deflate stream", function()
    local gz = compress(sample(50), 31)
    for _, keep in ipairs({ 1, 5, 10, math.floor(#gz / 2), #gz - 1 }) do
      local out, err = decode("gzip", { gz:sub(1, keep) })
      assert.is_nil(out, "kept " .. keep)
      assert.equal("the upstream answer ended inside its gzip data (truncated)", err)
    end
    local _, err = decode("deflate", { compress("x", 15):sub(1, 1) })
    assert.matches("(truncated)", err, 1, true)
    _, err = decode("deflate", { compress("x", 15) .. "more" })
    assert.equal("data after the end of the deflate stream in the upstream answer", err)
    _, err = decode("gzip", { gz .. "trailing garbage" })
    assert.matches("^corrupt gzip data", err)
  end)
end)
