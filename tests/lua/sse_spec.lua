local sse = require "aws_masker.sse"
local unmask = require "aws_masker.unmask"
local cjson = require "cjson"

local ORIGINALS = {
  AWS_EC2_000001 = "i-0a1b2c3d",
  AWS_ARN_000001 = [[arn:aws:iam::123456789012:role/"Admin"]],
  AWS_PRIVATE_IP_000001 = "10.0.1.5",
}

local function event(name, data, eol)
  eol = eol or "\n"
  return "event: " .. name .. eol .. "data: " .. cjson.encode(data) .. eol .. eol
end

local function delta(index, kind, field, value)
  return event("content_block_delta", { type = "content_block_delta", index = index,
    delta = { type = kind, [field] = value } })
end

-- A Messages API stream whose tokens are split across deltas in every awkward way.
local TEXT_PARTS = { "Instance A", "WS_E", "C2_00000", "1 is at AWS_PRIVATE_IP_000001", ".",
  " Role: AWS_ARN_", "000001 é", "😀 unknown AWS_EC2_000042; A", "W", "S_EC2_000001" }
local JSON_PARTS = { '{"instance":', ' "AWS_EC', '2_000001", "role": "AWS_ARN_000001",',
  ' "AWS_PRIVATE_IP_000001": 1}' }

local function stream(eol)
  local parts = {
    event("message_start", { type = "message_start", message = { id = "msg_1",
      type = "message", role = "assistant", content = {}, model = "claude" } }, eol),
    event("content_block_start", { type = "content_block_start", index = 0,
      content_block = { type = "thinking", thinking = "" } }, eol),
    delta(0, "thinking_delta", "thinking", "AWS_EC2_000001 stays"),
    delta(0, "signature_delta", "signature", "c2lnAWS_EC2_000001"),
    event("content_block_stop", { type = "content_block_stop", index = 0 }, eol),
    ": keep-alive comment" .. (eol or "\n") .. (eol or "\n"),
    event("ping", { type = "ping" }, eol),
    event("content_block_start", { type = "content_block_start", index = 1,
      content_block = { type = "text", text = "" } }, eol),
  }
  for _, t in ipairs(TEXT_PARTS) do
    parts[#parts + 1] = delta(1, "text_delta", "text", t)
  end
  parts[#parts + 1] = event("content_block_stop", { type = "content_block_stop", index = 1 }, eol)
  parts[#parts + 1] = event("content_block_start", { type = "content_block_start", index = 2,
    content_block = { type = "tool_use", id = "toolu_1", name = "describe", input = {} } }, eol)
  for _, t in ipairs(JSON_PARTS) do
    parts[#parts + 1] = delta(2, "input_json_delta", "partial_json", t)
  end
  parts[#parts + 1] = event("content_block_stop", { type = "content_block_stop", index = 2 }, eol)
  parts[#parts + 1] = event("message_delta", { type = "message_delta",
    delta = { stop_reason = "end_turn", stop_sequence = "AWS_EC2_000001" } }, eol)
  parts[#parts + 1] = event("message_stop", { type = "message_stop" }, eol)
  return table.concat(parts)
end

local function restore(chunks)
  local r = sse.new(unmask.new(ORIGINALS))
  local out = {}
  for _, c in ipairs(chunks) do
    out[#out + 1] = assert(r:feed(c))
  end
  out[#out + 1] = assert(r:finish())
  return table.concat(out)
end

-- Collects per-block text of the restored stream, and the other events in order.
local function summary(s)
  local text, others = {}, {}
  for ev in s:gsub("\r\n", "\n"):gmatch("(.-)\n\n") do
    local data = ev:match("data: ([^\n]*)")
    local doc = data and cjson.decode(data)
    if doc and doc.type == "content_block_delta" then
      local d = doc.delta
      local v = d.text or d.partial_json or d.thinking
      if v then
        text[doc.index] = (text[doc.index] or "") .. v
      end
    else
      others[#others + 1] = doc and doc.type or ev
    end
  end
  return text, others
end

describe("sse restorer", function()
  local whole, reference

  setup(function()
    whole = stream()
    reference = restore({ whole })
  end)

  it("restores tokens split across deltas and leaves thinking untouched", function()
    local text, others = summary(reference)
    local plain = table.concat(TEXT_PARTS)
    local expected = plain:gsub("AWS_[A-Z][A-Z0-9_]*_[0-9]+", function(t)
      return ORIGINALS[t] or t
    end)
    assert.equal(expected, text[1])
    assert.equal('{"instance": "i-0a1b2c3d", "role": "arn:aws:iam::123456789012:role/\\"Admin\\"",'
      .. ' "10.0.1.5": 1}', text[2])
    assert.same({ instance = "i-0a1b2c3d", role = ORIGINALS.AWS_ARN_000001,
      ["10.0.1.5"] = 1 }, cjson.decode(text[2]))
    assert.equal("AWS_EC2_000001 stays", text[0])
    assert.truthy(reference:find('"signature":"c2lnAWS_EC2_000001"', 1, true))
    assert.same({ "message_start", "content_block_start", "content_block_stop",
      ": keep-alive comment", "ping", "content_block_start", "content_block_stop",
      "content_block_start", "content_block_stop", "message_delta", "message_stop" }, others)
    assert.truthy(reference:find('"stop_sequence":"i-0a1b2c3d"', 1, true))
  end)

  it("gives the same output for a split at every byte offset", function()
    for i = 1, #whole - 1 do
      local out = restore({ whole:sub(1, i), whole:sub(i + 1) })
      if out ~= reference then
        assert.equal(reference, out, "split at byte " .. i)
      end
    end
  end)

  it("gives the same output for 1000 random multi-way splits", function()
    math.randomseed(20261203)
    for run = 1, 1000 do
      local chunks, pos = {}, 1
      while pos <= #whole do
        local size = math.random(1, run % 10 == 0 and 3 or 60)
        chunks[#chunks + 1] = whole:sub(pos, pos + size - 1)
        pos = pos + size
      end
      local out = restore(chunks)
      if out ~= reference then
        assert.equal(reference, out, "random split run " .. run)
      end
    end
  end)

  it("handles CRLF line endings and emits events as soon as they are complete", function()
    local crlf = stream("\r\n")
    local text = summary(restore({ crlf }))
    assert.equal(summary(reference)[1], text[1])

    local r = sse.new(unmask.new(ORIGINALS))
    local first = event("ping", { type = "ping" })
    assert.equal(first, r:feed(first .. "event: message_stop\ndata: {"))
    assert.equal('event: message_stop\ndata: {"type":"message_stop"}\n\n',
      r:feed('"type":"message_stop"}\n\n'))
  end)

  it("sends the carry of a block that never stopped at the end of the stream", function()
    local r = sse.new(unmask.new(ORIGINALS))
    local out = r:feed(delta(0, "text_delta", "text", "id AWS_EC2_00000"))
    out = out .. r:feed(delta(0, "text_delta", "text", "1")) .. r:finish()
    assert.equal("id i-0a1b2c3d", summary(out)[0])
  end)
end)
