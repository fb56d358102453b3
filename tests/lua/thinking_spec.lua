-- Thinking blocks the gateway delivers (aws_masker.thinking): the digest of a block as a
-- response streams it, chunk by chunk, must equal the digest of the same block sent back whole
-- in a request, and must change when anything the block is checked against changes.

local thinking = require "aws_masker.thinking"
local cjson = require "cjson"

local function event(name, data)
  return "event: " .. name .. "\ndata: " .. cjson.encode(data) .. "\n\n"
end

local function delta(index, kind, field, text)
  return event("content_block_delta", { type = "content_block_delta", index = index,
    delta = { type = kind, [field] = text } })
end

-- A stream with a thinking block (index 0) of `text` in deltas of `step` bytes and
-- `signature`, a text block (1) and a redacted_thinking block (2) of `data`.
local function stream(text, signature, data, step)
  local parts = { event("message_start", { type = "message_start", message = {} }),
    event("content_block_start", { type = "content_block_start", index = 0,
      content_block = { type = "thinking", thinking = "" } }) }
  for i = 1, #text, step do
    parts[#parts + 1] = delta(0, "thinking_delta", "thinking", text:sub(i, i + step - 1))
  end
  parts[#parts + 1] = delta(0, "signature_delta", "signature", signature)
  parts[#parts + 1] = event("content_block_stop", { type = "content_block_stop", index = 0 })
  parts[#parts + 1] = event("content_block_start", { type = "content_block_start", index = 1,
    content_block = { type = "text", text = "" } })
  parts[#parts + 1] = delta(1, "text_delta", "text", "thinking about signature_delta")
  parts[#parts + 1] = event("content_block_stop", { type = "content_block_stop", index = 1 })
  parts[#parts + 1] = event("content_block_start", { type = "content_block_start", index = 2,
    content_block = { type = "redacted_thinking", data = data } })
  parts[#parts + 1] = event("content_block_stop", { type = "content_block_stop", index = 2 })
  parts[#parts + 1] = event("message_stop", { type = "message_stop" })
  return table.concat(parts)
end

-- Feeds data in chunks of `size` bytes (a list of sizes cycles) and returns every digest.
local function feed(data, content_type, size)
  local st = { scope = "0123456789abcdef0123" }
  thinking.response_start(st, content_type, nil)
  local sizes = type(size) == "table" and size or { size }
  local digests, pos, k = {}, 1, 0
  repeat
    k = k % #sizes + 1
    local chunk = data:sub(pos, pos + sizes[k] - 1)
    pos = pos + sizes[k]
    local eof = pos > #data
    for _, d in ipairs(thinking.response_chunk(st, chunk, eof) or {}) do
      digests[#digests + 1] = d
    end
  until eof
  return digests, st
end

describe("aws_masker.thinking", function()
  -- Longer than one 4 KiB piece of the chain, with multi-byte characters across its seams.
  local TEXT = ("Use 10.0.0.0/16 for the VPC — café 😀 ok. "):rep(300)
  local SIGNATURE = "EqQBCkYIARgCIkCmZ+/x=="
  local DATA = "EmwKAhgBEgy3va3pzix/LafPsn4a"

  local function whole()
    return thinking.block_digest({ type = "thinking", thinking = TEXT, signature = SIGNATURE })
  end

  it("digests a streamed block as its whole, however the stream is cut", function()
    local expected = { whole(),
      thinking.block_digest({ type = "redacted_thinking", data = DATA }) }
    assert.matches("^%x+$", expected[1])
    assert.equal(40, #expected[1])
    for _, step in ipairs({ 1, 7, 4096, 5000 }) do
      local data = stream(TEXT, SIGNATURE, DATA, step)
      for _, size in ipairs({ 1, 3, 13, 4096, #data, { 2, 9000, 1 } }) do
        assert.same(expected, (feed(data, "text/event-stream; charset=utf-8", size)),
          "step " .. step .. ", chunk " .. tostring(size))
      end
    end
  end)

  it("holds at most one unfinished event of a stream", function()
    local data = stream(TEXT, SIGNATURE, DATA, 50)
    local _, st = feed(data:sub(1, 20000), "text/event-stream", 4096)
    assert.is_true(#st.thinking.pending < 200)
  end)

  it("binds the text, the signature and the kind of the block", function()
    local base = whole()
    assert.not_equal(base, thinking.block_digest({ type = "thinking",
      thinking = TEXT .. " ", signature = SIGNATURE }))
    assert.not_equal(base, thinking.block_digest({ type = "thinking",
      thinking = TEXT:sub(2), signature = SIGNATURE }))
    assert.not_equal(base, thinking.block_digest({ type = "thinking",
      thinking = TEXT, signature = SIGNATURE .. "A" }))
    -- Text moved into the signature, or the whole into redacted data: another digest.
    assert.not_equal(thinking.block_digest({ type = "thinking", thinking = "ab", signature = "c" }),
      thinking.block_digest({ type = "thinking", thinking = "a", signature = "bc" }))
    assert.not_equal(thinking.block_digest({ type = "redacted_thinking", data = "x" }),
      thinking.block_digest({ type = "thinking", thinking = "x", signature = "" }))
    -- A text of exactly one piece and the digest of that piece are two texts.
    local piece = ("p"):rep(4096)
    assert.not_equal(thinking.block_digest({ type = "thinking", thinking = piece,
      signature = "" }), thinking.block_digest({ type = "thinking",
      thinking = ngx.sha1_bin(piece), signature = "" }))
    -- Not a block the API delivers: no digest.
    assert.is_nil(thinking.block_digest({ type = "thinking", thinking = "x" }))
    assert.is_nil(thinking.block_digest({ type = "redacted_thinking", data = 1 }))
    assert.is_nil(thinking.block_digest({ type = "text", text = "x" }))
  end)

  it("digests the blocks of a JSON response at its end", function()
    local body = cjson.encode({ type = "message", content = {
      { type = "thinking", thinking = TEXT, signature = SIGNATURE },
      { type = "text", text = "done" },
      { type = "redacted_thinking", data = DATA } } })
    for _, size in ipairs({ 5, 4096, #body }) do
      local digests, st = feed(body, "application/json", size)
      assert.same({ whole(), thinking.block_digest({ type = "redacted_thinking", data = DATA }) },
        digests)
      assert.equal(2, thinking.blocks(st))
    end
    assert.same({}, (feed('{"type":"message","content":[{"type":"text","text":"x"}]}',
      "application/json", 7)))
  end)

  it("follows neither a compressed response, nor other media, nor a request without scope",
    function()
      local data = stream(TEXT, SIGNATURE, DATA, 100)
      local st = { scope = "s" }
      thinking.response_start(st, "text/event-stream", "gzip")
      assert.is_nil(st.thinking)
      thinking.response_start(st, "application/octet-stream", nil)
      assert.is_nil(st.thinking)
      st = {}
      thinking.response_start(st, "text/event-stream", nil)
      assert.is_nil(thinking.response_chunk(st, data, true))
    end)

  it("leaves a block without its end unrecorded", function()
    local data = stream(TEXT, SIGNATURE, DATA, 100)
    local cut = data:find('"content_block_stop"', 1, true)
    assert.same({}, (feed(data:sub(1, cut - 30), "text/event-stream", 512)))
  end)

  it("reports a record it could not write, and writes the others", function()
    local failures = {}
    local store = {}
    function store.remember_thinking(_, scope, digests)
      return nil, "redis connect: refused " .. scope .. " " .. #digests
    end
    -- Timers do not run in the init phase where specs run: call the timer's function.
    local saved = ngx.timer.at
    ngx.timer.at = function(_, fn, ...) -- luacheck: ignore 122
      fn(false, ...)
      return true
    end
    local ok, err = pcall(thinking.record_later, store, "scope1", { "a", "b" }, function(n, e)
      failures[#failures + 1] = n .. " " .. e
    end)
    ngx.timer.at = saved -- luacheck: ignore 122
    assert(ok, err)
    assert.same({ "2 redis connect: refused scope1 2" }, failures)
  end)
end)
