-- The engine-neutral pipeline (aws_masker.pipeline), with the shipped catalog and a store
-- object standing in for Redis (cosockets do not exist in nginx's init phase, where specs run).

local pipeline = require "aws_masker.pipeline"
local thinking = require "aws_masker.thinking"
local cjson = require "cjson"

local SECRET = "0123456789abcdef-pipeline-spec"

local function recording_store()
  local store = { scopes = {}, calls = 0 }
  function store.assign(self, scope, findings)
    self.calls = self.calls + 1
    self.scopes[#self.scopes + 1] = scope
    local tokens = {}
    for i, f in ipairs(findings) do
      tokens[i] = string.format("AWS_%s_%06d", f.code, i)
    end
    return tokens
  end
  return store
end

-- A store that knows the digests in known[scope] and records every lookup.
local function thinking_store(known)
  local store = recording_store()
  store.lookups = {}
  local assign = store.assign
  function store.assign(self, scope, findings, digests)
    local tokens = assign(self, scope, findings)
    local found = {}
    for _, d in ipairs(digests or {}) do
      self.lookups[#self.lookups + 1] = d
      found[d] = known[scope] and known[scope][d] or nil
    end
    return tokens, nil, found
  end
  return store
end

local function failing_store()
  return { assign = function() return nil, "redis connect: timeout" end }
end

describe("aws_masker.pipeline", function()
  local catalog

  setup(function()
    catalog = assert(pipeline.load_catalog(AWS_MASKER_TEST_CATALOG))
  end)

  local function new(store, fail_mode, max)
    return assert(pipeline.new({ catalog = catalog, store = store or recording_store(),
      scope_secret = SECRET, max_body_bytes = max or 2048, fail_mode = fail_mode }))
  end

  local function body(text)
    return cjson.encode({ model = "m", messages = { { role = "user", content = text } } })
  end

  it("refuses to be built without its parts", function()
    assert.is_nil(pipeline.new({ store = recording_store(), scope_secret = SECRET,
      max_body_bytes = 1 }))
    assert.is_nil(pipeline.new({ catalog = catalog, scope_secret = SECRET, max_body_bytes = 1 }))
    assert.is_nil(pipeline.new({ catalog = catalog, store = recording_store(),
      max_body_bytes = 1 }))
    assert.is_nil(pipeline.new({ catalog = catalog, store = recording_store(),
      scope_secret = SECRET, max_body_bytes = 0 }))
    local p, err = pipeline.new({ catalog = catalog, store = recording_store(),
      scope_secret = SECRET, max_body_bytes = 1, fail_mode = "sometimes" })
    assert.is_nil(p)
    assert.matches("fail_mode", err)
  end)

  it("checks encoding, media type and declared length before the body is read", function()
    local p = new()
    assert.is_true(p:check_request(pipeline.start(), nil, "application/json", "10", nil))
    assert.is_true(p:check_request(pipeline.start(), "identity", nil, nil, nil))
    assert.is_true(p:check_request(pipeline.start(), nil, "text/plain", "0", nil))

    local st = pipeline.start()
    local ok, failure = p:check_request(st, "gzip", "application/json", "10", nil)
    assert.is_nil(ok)
    assert.equal(400, failure.status)
    assert.equal("invalid_request_error", failure.type)
    assert.equal(400, st.status)
    assert.same({ type = "error", error = { type = failure.type, message = failure.message } },
      cjson.decode(failure.body))

    local _
    _, failure = p:check_request(pipeline.start(), nil, "multipart/form-data", nil, "chunked")
    assert.equal(400, failure.status)

    _, failure = p:check_request(pipeline.start(), nil, "application/json", "2049", nil)
    assert.equal(413, failure.status)
    assert.equal("request_too_large", failure.type)
    assert.equal("request body exceeds the gateway limit of 2048 bytes", failure.message)
  end)

  it("masks into the credential's scope and keeps the originals for the response", function()
    local store = recording_store()
    local p = new(store)
    local st = pipeline.start()
    local raw = body("stop i-0a1b2c3d4e5f67890 and i-0a1b2c3d4e5f67890 in vpc-a01106c2")
    local out = assert(p:mask_body(st, raw, "key-1", "Bearer other"))
    assert.is_nil(out:find("i-0a1b2c3d4e5f67890", 1, true))
    assert.equal(3, st.masked)
    assert.equal(2, st.distinct)
    assert.equal("i-0a1b2c3d4e5f67890", st.originals.AWS_EC2_000001)

    p:mask_body(pipeline.start(), raw, nil, "Bearer other")
    p:mask_body(pipeline.start(), raw, "key-1", nil)
    assert.equal(store.scopes[1], store.scopes[3]) -- x-api-key wins over Authorization
    assert.not_equal(store.scopes[1], store.scopes[2])
    assert.matches("^%x+$", store.scopes[1])
    assert.equal(20, #store.scopes[1])
  end)

  local function scoped(store, scope_by, scope_header)
    return assert(pipeline.new({ catalog = catalog, store = store, scope_secret = SECRET,
      max_body_bytes = 2048, scope_by = scope_by, scope_header = scope_header }))
  end

  it("checks scope_by and scope_header when it is built", function()
    local function refused(scope_by, scope_header, complaint)
      local p, err = pipeline.new({ catalog = catalog, store = recording_store(),
        scope_secret = SECRET, max_body_bytes = 1, scope_by = scope_by,
        scope_header = scope_header })
      assert.is_nil(p)
      assert.matches(complaint, err)
    end
    refused("consumer", nil, "scope_by")
    refused("header", nil, "scope_header")
    refused("header", "", "scope_header")
    refused("header", "x_team", "scope_header")
    refused("header", "x-team: a", "scope_header")

    assert.equal("credential", scoped(recording_store()).scope_by)
    assert.is_nil(scoped(recording_store(), "credential", "X-Team").scope_header)
    assert.equal("X-Team", scoped(recording_store(), "header", "X-Team").scope_header)
  end)

  it("scopes by a header's value under scope_by header, and refuses a request without it",
    function()
      local store = recording_store()
      local p = scoped(store, "header", "X-Team")
      local raw = body("stop i-0a1b2c3d4e5f67890")
      assert(p:mask_body(pipeline.start(), raw, "key-1", nil, "team-a"))
      assert(p:mask_body(pipeline.start(), raw, "key-2", nil, "team-a"))
      assert(p:mask_body(pipeline.start(), raw, "key-1", nil, "team-b"))
      assert.equal(store.scopes[1], store.scopes[2]) -- the credential plays no part
      assert.not_equal(store.scopes[1], store.scopes[3])
      assert.equal(20, #store.scopes[1])

      for _, missing in ipairs({ false, "" }) do
        local st = pipeline.start()
        -- Even a body without identifiers: the client learns at once.
        local out, failure = p:mask_body(st, body("nothing here"), "key-1", nil,
          missing or nil)
        assert.is_nil(out)
        assert.equal(400, failure.status)
        assert.equal("invalid_request_error", failure.type)
        assert.matches("X-Team header is required", failure.message, 1, true)
        assert.equal(400, st.status)
      end
      assert.equal(3, store.calls)
    end)

  it("puts every client in one scope under scope_by global", function()
    local store = recording_store()
    local p = scoped(store, "global")
    local raw = body("stop i-0a1b2c3d4e5f67890")
    assert(p:mask_body(pipeline.start(), raw, "key-1", nil))
    assert(p:mask_body(pipeline.start(), raw, nil, "Bearer other"))
    assert(p:mask_body(pipeline.start(), raw, nil, nil))
    assert.equal(store.scopes[1], store.scopes[2])
    assert.equal(store.scopes[1], store.scopes[3])
    assert.equal(20, #store.scopes[1])

    local by_credential = recording_store()
    scoped(by_credential):mask_body(pipeline.start(), raw, "key-1", nil)
    assert.not_equal(store.scopes[1], by_credential.scopes[1])
  end)

  it("calls no store for an empty body or a body without identifiers", function()
    local store = recording_store()
    local p = new(store)
    local st = pipeline.start()
    assert.equal("", p:mask_body(st, "", "k", nil))
    local raw = body("nothing here")
    assert.equal(raw, p:mask_body(st, raw, "k", nil))
    assert.equal(0, store.calls)
    assert.is_nil(st.originals)
  end)

  it("forwards an assistant thinking block holding an identifier only if its scope knows it",
    function()
      local block = { type = "thinking", thinking = "use 10.0.0.0/16", signature = "c2ln" }
      local digest = thinking.block_digest(block)
      local raw = cjson.encode({ model = "m", messages = {
        { role = "user", content = "hi i-0a1b2c3d4e5f67890" },
        { role = "assistant", content = { block, { type = "text", text = "ok" } } },
        { role = "user", content = "go on" } } })
      local p = new(thinking_store({}))
      local scope = p:scope("k", nil)

      local store = thinking_store({ [scope] = { [digest] = true } })
      local st = pipeline.start()
      local out = assert(new(store):mask_body(st, raw, "k", nil))
      assert.equal(1, store.calls)
      assert.same({ digest }, store.lookups)
      assert.same(block, cjson.decode(out).messages[2].content[1])
      assert.equal("hi AWS_EC2_000001", cjson.decode(out).messages[1].content)
      assert.equal(scope, st.scope)

      -- Another scope, or a block it never delivered: refused, saying how to go on.
      for _, known in ipairs({ { other = { [digest] = true } }, { [scope] = { x = true } } }) do
        st = pipeline.start()
        local refused, failure = new(thinking_store(known)):mask_body(st, raw, "k", nil)
        assert.is_nil(refused)
        assert.equal(400, failure.status)
        assert.equal(thinking.UNKNOWN, failure.message)
        assert.matches("leave that block out", failure.message, 1, true)
      end

      -- A store unaware of digests vouches for none.
      local _, failure = new(recording_store()):mask_body(pipeline.start(), raw, "k", nil)
      assert.equal(400, failure.status)

      -- Only the block holds an identifier: one store call, for the lookup alone.
      store = thinking_store({ [scope] = { [digest] = true } })
      local only, n = raw:gsub("hi i%-0a1b2c3d4e5f67890", "hi")
      assert.equal(1, n)
      assert.equal(only, new(store):mask_body(pipeline.start(), only, "k", nil))
      assert.equal(1, store.calls)

      -- A block without identifier: no lookup at all.
      store = thinking_store({})
      local plain
      plain, n = only:gsub("10%.0%.0%.0\\/16", "a subnet") -- cjson escapes the slash
      assert.equal(1, n)
      assert.equal(plain, new(store):mask_body(pipeline.start(), plain, "k", nil))
      assert.equal(0, store.calls)
    end)

  it("fails closed on a store error, or forwards unmasked when fail_mode is open", function()
    local raw = body("stop i-0a1b2c3d4e5f67890")
    local st = pipeline.start()
    local out, failure = new(failing_store()):mask_body(st, raw, "k", nil)
    assert.is_nil(out)
    assert.equal(503, failure.status)
    assert.equal("redis connect: timeout", st.store_error)
    assert.is_nil(failure.message:find("redis", 1, true)) -- the cause is logged, not sent

    st = pipeline.start()
    assert.equal(raw, new(failing_store(), "open"):mask_body(st, raw, "k", nil))
    assert.is_true(st.fail_open)
    assert.is_nil(st.originals)
    local line, level = pipeline.log_line(st, 200)
    assert.equal("warn", level)
    assert.matches(" fail_open=1", line, 1, true)
  end)

  it("masks header values with the body in one store call, credentials as sent", function()
    local store = recording_store()
    local p = new(store)
    local st = pipeline.start()
    local headers = { ["x-api-key"] = "AKIAIOSFODNN7EXAMPLE", authorization = "i-0a1b2c3d",
      host = "ip-10-0-1-5.ec2.internal", ["anthropic-version"] = "2023-06-01",
      ["x-trace"] = { "vm i-0a1b2c3d", "plain" }, ["user-agent"] = "cli vpc-a01106c2" }
    local out = assert(p:mask_body(st, body("stop i-0a1b2c3d"), "k", nil, nil, headers))
    assert.equal(1, store.calls)
    assert.is_true(st.body_masked)
    assert.equal("stop AWS_EC2_000001", cjson.decode(out).messages[1].content)
    assert.same({ ["x-trace"] = { "vm AWS_EC2_000001", "plain" },
      ["user-agent"] = "cli AWS_VPC_000002" }, st.headers)
    assert.equal(3, st.masked)
    assert.is_true(st.log_apart)

    -- Headers alone: the body is left as it is.
    st = pipeline.start()
    assert.equal("", p:mask_body(st, "", "k", nil, nil, { ["x-note"] = "i-0a1b2c3d" }))
    assert.is_false(st.body_masked)
    assert.same({ ["x-note"] = "AWS_EC2_000001" }, st.headers)
  end)

  it("refuses an identifier in a header the API reads, and fails closed for headers", function()
    local store = recording_store()
    local st = pipeline.start()
    local out, failure = new(store):mask_body(st, body("hi"), "k", nil, nil,
      { ["anthropic-beta"] = "tools-i-0a1b2c3d" })
    assert.is_nil(out)
    assert.equal(400, failure.status)
    assert.matches("'anthropic-beta'", failure.message, 1, true)
    assert.not_matches("0a1b2c3d", failure.message)
    assert.equal(0, store.calls)

    st = pipeline.start()
    out, failure = new(failing_store()):mask_body(st, body("hi"), "k", nil, nil,
      { ["x-note"] = "i-0a1b2c3d" })
    assert.is_nil(out)
    assert.equal(503, failure.status)
    assert.is_nil(st.headers)
  end)

  it("answers 400 to malformed JSON and 413 to a body over the limit", function()
    local _, failure = new():mask_body(pipeline.start(), '{"a": [1, 2', "k", nil)
    assert.equal(400, failure.status)
    _, failure = new(nil, nil, 16):mask_body(pipeline.start(), body("a long enough body"), "k")
    assert.equal(413, failure.status)
  end)

  it("rewrites only readable JSON, text and event streams of masked requests", function()
    local function decision(masked, ctype, encoding)
      local st = pipeline.start()
      st.originals = masked and { AWS_EC2_000001 = "i-0a1b2c3d" } or nil
      return pipeline.restore_start(st, ctype, encoding), st
    end
    assert.is_false(decision(false, "application/json"))
    assert.is_true(decision(true, "application/json; charset=utf-8"))
    assert.is_true(decision(true, nil))
    assert.is_true(decision(true, "text/plain"))
    assert.is_false(decision(true, "application/octet-stream"))
    local rewrite, st = decision(true, "application/json", "gzip")
    assert.is_true(rewrite)
    assert.equal("gzip", st.response_decoded)
    assert.is_false(decision(true, "application/octet-stream", "br"))
    rewrite, st = decision(true, "text/event-stream")
    assert.is_true(rewrite)
    assert.is_true(pipeline.streaming(st))
  end)

  it("holds a whole body until its last chunk, then restores it", function()
    local st = pipeline.start()
    st.originals = { AWS_EC2_000001 = "i-0a1b2c3d" }
    assert.is_true(pipeline.restore_start(st, "application/json", nil))
    assert.is_nil(pipeline.restore_chunk(st, '{"text": "AWS_EC', false))
    assert.is_nil(pipeline.restore_chunk(st, "", false))
    assert.equal('{"text": "i-0a1b2c3d AWS_EC2_000009"}',
      pipeline.restore_chunk(st, '2_000001 AWS_EC2_000009"}', true))
    assert.same({ 1, 1 }, { pipeline.restore_counts(st) })

    local line, level = pipeline.log_line(st, 200)
    assert.equal("notice", level)
    assert.matches("restored=1 unknown_tokens=1", line, 1, true)
    assert.is_nil(line:find("i-0a1b2c3d", 1, true))
  end)

  describe("with a compressed answer", function()
    local zlib = require "zlib"
    local ORIGINALS = { AWS_EC2_000001 = "i-0a1b2c3d", AWS_VPC_000001 = "vpc-a01106c2" }
    local JSON = '{"content":[{"type":"text","text":"AWS_EC2_000001 in AWS_VPC_000001"}]}'
    local RESTORED = '{"content":[{"type":"text","text":"i-0a1b2c3d in vpc-a01106c2"}]}'
    local SSE = 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
      .. '"delta":{"type":"text_delta","text":"AWS_EC2_0"}}\n\n'
      .. 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
      .. '"delta":{"type":"text_delta","text":"00001 ok"}}\n\n'
      .. 'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'

    local function compress(data, window)
      return (zlib.deflate(6, window)(data, "finish"))
    end

    local function started(ctype, encoding)
      local st = pipeline.start()
      st.originals = ORIGINALS
      return st, pipeline.restore_start(st, ctype, encoding)
    end

    -- Feeds data cut in size-byte chunks; returns what was sent, and whether the body was
    -- ended early.
    local function feed(st, data, size)
      local out, ended = {}, false
      for i = 1, #data, size do
        local sent, eof = pipeline.restore_chunk(st, data:sub(i, i + size - 1), i + size > #data)
        out[#out + 1] = sent
        ended = ended or eof == true
      end
      return table.concat(out), ended
    end

    it("decodes gzip and deflate JSON chunk by chunk and restores it", function()
      for _, case in ipairs({ { "gzip", 31 }, { "x-gzip", 31 }, { "deflate", 15 },
          { "deflate", -15 } }) do
        local data = compress(JSON, case[2])
        for _, size in ipairs({ 1, 5, #data }) do
          local st, restore = started("application/json", case[1])
          assert.is_true(restore)
          assert.equal(RESTORED, (feed(st, data, size)))
          assert.matches(" decoded=" .. (case[1] == "x-gzip" and "gzip" or case[1]),
            (pipeline.log_line(st, 200)), 1, true)
        end
      end
    end)

    it("decodes a gzip event stream and restores a token split across its events", function()
      local data = compress(SSE, 31)
      for size = 1, #data, 3 do
        local st = started("text/event-stream", "gzip")
        local out, ended = feed(st, data, size)
        assert.is_false(ended)
        assert.is_nil(out:find("AWS_", 1, true))
        assert.matches('"text":"i-0a1b2c3d ok"', out, 1, true)
      end
    end)

    it("replaces an answer in an encoding it cannot decode by a 502", function()
      for _, encoding in ipairs({ "br", "zstd", "gzip, br", 'x"' .. string.rep("y", 60) }) do
        local st, restore, failure = started("application/json", encoding)
        assert.is_false(restore)
        assert.equal(502, failure.status)
        assert.equal("api_error", failure.type)
        assert.matches("encoding, which the gateway cannot decode", failure.message, 1, true)
        assert.is_true(pipeline.restoring(st) and pipeline.replacing(st))
        assert.same({ failure.body, true }, { pipeline.restore_chunk(st, "\1\2\3", false) })
        assert.same({ "" }, { pipeline.restore_chunk(st, "\4", true) })
        local line, level = pipeline.log_line(st, 502)
        assert.equal("err", level)
        assert.matches("status=502 ", line, 1, true)
      end
      local _, _, failure = started("text/event-stream", "br")
      assert.matches("answered in br encoding", failure.message, 1, true)
      _, _, failure = started("text/plain", 'x"' .. string.rep("y", 60))
      assert.matches("answered in an unknown encoding", failure.message, 1, true)
    end)

    it("ends a corrupt JSON answer with an error document in place of the body", function()
      local data = compress(JSON, 31)
      local corrupt = data:sub(1, 12) .. "\255\255\255\255" .. data:sub(17)
      for _, bad in ipairs({ corrupt, data:sub(1, #data - 3) }) do
        local st = started("application/json", "gzip")
        local out = feed(st, bad, 4)
        local doc = cjson.decode(out)
        assert.equal("error", doc.type)
        assert.equal("api_error", doc.error.type)
        assert.matches("gzip data", doc.error.message, 1, true)
        assert.matches("the answer could not be restored$", doc.error.message)
        local line, level = pipeline.log_line(st, 200)
        assert.equal("err", level)
        assert.matches("restore_error=", line, 1, true)
      end
    end)

    it("ends a stream that breaks off with an SSE error event after what was sent", function()
      local data = compress(SSE, 31)
      local st = started("text/event-stream", "gzip")
      local out, ended = feed(st, data:sub(1, #data - 6), 7)
      assert.is_true(ended)
      local events = {}
      for ev in out:gmatch("(.-\n\n)") do
        events[#events + 1] = ev
      end
      assert.equal(table.concat(events), out) -- every event whole, nothing half-sent
      local last = events[#events]
      assert.matches("^event: error\ndata: ", last)
      local doc = cjson.decode(last:match("data: ([^\n]+)"))
      assert.same({ "error", "api_error" }, { doc.type, doc.error.type })
      assert.matches("(truncated)", doc.error.message, 1, true)
      assert.matches('"text":"i-0a1b2c3d ok"', out, 1, true) -- the events before it, restored
    end)
  end)
end)
