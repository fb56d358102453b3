-- The Kong adapter (kong.plugins.aws-masker.handler) against a stand-in PDK.
--
-- Kong is not installed here, so no Kong ran these specs. What is real: nginx's Lua module
-- (ngx.re is PCRE, as in Kong), the shipped catalog, the masking pipeline. What is faked:
--   * the global `kong`: only the PDK calls the handler makes, with the signatures and the
--     behaviour documented for Kong 3.x (kong.request.get_header / get_raw_body,
--     kong.service.request.clear_header / set_raw_body, kong.response.get_header /
--     clear_header / set_header / get_status / set_status / get_raw_body / set_raw_body /
--     exit, kong.ctx.plugin,
--     kong.log.<level>); each call is recorded;
--   * ngx.arg: a plain table standing for the chunk and eof flag of one body_filter call;
--   * ngx.timer.at, where a spec needs it: the init phase has no timers, so the spec keeps the
--     timer's function and calls it as nginx would after the phase;
--   * the mapping store: Redis cannot be reached from nginx's init phase (no cosockets), so a
--     store object goes in through the pipeline's interface (pipeline.new{ store = ... }).

local pipeline = require "aws_masker.pipeline"
local cjson = require "cjson"

local SECRET = "0123456789abcdef-kong-spec"
local API_KEY = "sk-ant-spec-key"

local IDENTIFIERS = { "i-0a1b2c3d4e5f67890", "arn:aws:iam::123456789012:role/Admin",
  "10.0.1.5", "vpc-a01106c2" }

-- A store that numbers tokens per scope and code, as the Redis script does.
local function counting_store()
  local store = { calls = 0, by_value = {} }
  function store.assign(self, scope, findings)
    self.calls = self.calls + 1
    local tokens = {}
    for i, f in ipairs(findings) do
      local key = scope .. "\0" .. f.code .. "\0" .. f.value
      local token = self.by_value[key]
      if not token then
        self[f.code] = (self[f.code] or 0) + 1
        token = string.format("AWS_%s_%06d", f.code, self[f.code])
        self.by_value[key] = token
      end
      tokens[i] = token
    end
    return tokens
  end
  return store
end

local function unreachable_store()
  return {
    assign = function()
      return nil, "redis connect: connection refused"
    end,
  }
end

-- The stand-in PDK for one request. request: { headers = {name = value}, body = string or
-- nil (nil: the body was spooled to a file) }. The response side is set by the spec.
local function fake_kong(request)
  local calls = {}
  local function record(name, ...)
    calls[#calls + 1] = { name = name, args = { ... } }
  end

  local function header_key(name)
    assert(type(name) == "string", "header name must be a string")
    return (name:lower():gsub("_", "-"))
  end

  local request_headers = {}
  for k, v in pairs(request.headers or {}) do
    request_headers[header_key(k)] = v
  end

  local response = { status = 200, headers = {}, buffer = nil }
  local log_lines = {}
  local function logger(level)
    return function(...)
      local parts = { ... }
      for i = 1, select("#", ...) do
        parts[i] = tostring(parts[i])
      end
      log_lines[#log_lines + 1] = { level = level, line = table.concat(parts) }
    end
  end

  local k = {
    calls = calls,
    response_state = response,
    log_lines = log_lines,
    ctx = { plugin = {}, shared = {} },
    log = { err = logger("err"), warn = logger("warn"), notice = logger("notice"),
      info = logger("info"), debug = logger("debug") },
    request = {
      -- First value of a header, case-insensitive, "_" standing for "-"; nil when absent.
      get_header = function(name)
        record("request.get_header", name)
        return request_headers[header_key(name)]
      end,
      -- Every header, lower-case names, a list for a name sent more than once; at most
      -- max_headers (1 to 1000), then "truncated" as a second value.
      get_headers = function(max_headers)
        record("request.get_headers", max_headers)
        assert(type(max_headers) == "number" and max_headers >= 1 and max_headers <= 1000,
          "max_headers must be a number from 1 to 1000")
        local out, n = {}, 0
        for name, value in pairs(request_headers) do
          n = n + 1
          if n > max_headers then
            return out, "truncated"
          end
          out[name] = value
        end
        return out
      end,
      -- The path and query string as the client sent them.
      get_path_with_query = function()
        record("request.get_path_with_query")
        return request.path or "/v1/messages"
      end,
      -- The whole body; nil and an error when nginx spooled it to a file.
      get_raw_body = function()
        record("request.get_raw_body")
        if request.body == nil then
          return nil, "request body did not fit into client body buffer, "
            .. "consider raising 'client_body_buffer_size'"
        end
        return request.body
      end,
    },
    service = {
      request = {
        clear_header = function(name)
          assert(type(name) == "string", "header name must be a string")
          record("service.request.clear_header", name)
        end,
        set_raw_body = function(body)
          assert(type(body) == "string", "body must be a string")
          record("service.request.set_raw_body", body)
        end,
        -- name -> string, or a list of strings for a header sent more than once.
        set_headers = function(headers)
          assert(type(headers) == "table", "headers must be a table")
          for name, value in pairs(headers) do
            assert(type(name) == "string", "header name must be a string")
            if type(value) == "table" then
              for _, item in ipairs(value) do
                assert(type(item) == "string", "header value must be a string")
              end
            else
              assert(type(value) == "string", "header value must be a string")
            end
          end
          record("service.request.set_headers", headers)
        end,
      },
    },
    response = {
      get_status = function()
        return response.status
      end,
      get_header = function(name)
        record("response.get_header", name)
        return response.headers[header_key(name)]
      end,
      clear_header = function(name)
        assert(type(name) == "string", "header name must be a string")
        record("response.clear_header", name)
        response.headers[header_key(name)] = nil
      end,
      set_header = function(name, value)
        assert(type(name) == "string", "header name must be a string")
        assert(type(value) == "string", "header value must be a string")
        record("response.set_header", name, value)
        response.headers[header_key(name)] = value
      end,
      set_status = function(status)
        assert(type(status) == "number" and status >= 100 and status <= 599,
          "code must be a number between 100 and 599")
        record("response.set_status", status)
        response.status = status
      end,
      -- Buffers the chunks; nil (and ngx.arg[1] = nil) until the last, then the whole body.
      get_raw_body = function()
        record("response.get_raw_body")
        local chunk, eof = ngx.arg[1], ngx.arg[2]
        if type(chunk) == "string" and chunk ~= "" then
          response.buffer = (response.buffer or "") .. chunk
        end
        if not eof then
          ngx.arg[1] = nil
          return nil
        end
        local body = response.buffer or ""
        ngx.arg[1] = body
        return body
      end,
      -- Replaces the body: the chunk becomes the body and the last one.
      set_raw_body = function(body)
        assert(type(body) == "string", "body must be a string")
        record("response.set_raw_body", body)
        ngx.arg[1] = body ~= "" and body or "\n"
        ngx.arg[2] = true
        response.buffer = nil
      end,
      exit = function(status, body, headers)
        assert(type(status) == "number" and status >= 100 and status <= 599,
          "code must be a number between 100 and 599")
        assert(body == nil or type(body) == "string" or type(body) == "table",
          "body must be a nil, string or table")
        assert(headers == nil or type(headers) == "table", "headers must be a nil or table")
        record("response.exit", status, body, headers)
        response.status = status
        response.exited = true
      end,
    },
  }
  return k
end

local function calls_named(k, name)
  local found = {}
  for _, c in ipairs(k.calls) do
    if c.name == name then
      found[#found + 1] = c.args
    end
  end
  return found
end

-- Runs the body_filter phase over chunks, each as one call with ngx.arg set as nginx does.
local function run_body_filter(handler, conf, chunks)
  local saved = rawget(ngx, "arg")
  local out = {}
  local ok, err = pcall(function()
    for i, chunk in ipairs(chunks) do
      ngx.arg = { chunk, i == #chunks }
      handler:body_filter(conf)
      if ngx.arg[1] then
        out[#out + 1] = ngx.arg[1]
      end
    end
  end)
  ngx.arg = saved
  assert(ok, err)
  return table.concat(out)
end

local function split(s, size)
  local parts = {}
  for i = 1, #s, size do
    parts[#parts + 1] = s:sub(i, i + size - 1)
  end
  return parts
end

-- The headers a restored answer drops: it leaves rewritten and uncompressed.
local RESTORED_HEADERS = { { "Content-Length" }, { "Content-Encoding" } }

local function messages_body(text)
  return cjson.encode({ model = "claude-sonnet-4-5", max_tokens = 64,
    messages = { { role = "user", content = text } } })
end

describe("kong.plugins.aws-masker.handler", function()
  local handler, pipelines, catalog
  local saved_kong

  setup(function()
    saved_kong = rawget(_G, "kong")
    -- Busted runs specs in their own environment: the handler sees _G.
    _G.kong = fake_kong({}) -- the handler caches the global table when it loads
    pipelines = require "kong.plugins.aws-masker.pipelines"
    handler = require "kong.plugins.aws-masker.handler"
    catalog = assert(pipelines.catalog(AWS_MASKER_TEST_CATALOG))
  end)

  teardown(function()
    _G.kong = saved_kong
    package.loaded["kong.plugins.aws-masker.handler"] = nil
  end)

  -- A fresh PDK state for one request, swapped into the table the handler holds.
  local function new_request(request)
    local pdk = _G.kong
    for key in pairs(pdk) do
      pdk[key] = nil
    end
    for key, value in pairs(fake_kong(request)) do
      pdk[key] = value
    end
    return pdk
  end

  local function new_conf(store, overrides)
    local conf = { catalog_path = AWS_MASKER_TEST_CATALOG, scope_secret = SECRET,
      max_body_bytes = 4096, fail_mode = "closed",
      redis = { host = "127.0.0.1", port = 6379 }, mapping_ttl_seconds = 86400 }
    for key, value in pairs(overrides or {}) do
      conf[key] = value
    end
    pipelines.set(conf, assert(pipeline.new({ catalog = catalog, store = store,
      scope_secret = conf.scope_secret, scope_by = conf.scope_by,
      scope_header = conf.scope_header, max_body_bytes = conf.max_body_bytes,
      fail_mode = conf.fail_mode })))
    return conf
  end

  local function json_request(body, extra)
    local headers = { ["Content-Type"] = "application/json", ["x-api-key"] = API_KEY,
      ["Content-Length"] = body and tostring(#body) or nil }
    for key, value in pairs(extra or {}) do
      headers[key] = value or nil -- false: the header is absent
    end
    return { headers = headers, body = body }
  end

  -- Masks a request and returns the body forwarded upstream.
  local function masked_exchange(conf, text)
    local k = new_request(json_request(messages_body(text)))
    handler:access(conf)
    local set = calls_named(k, "service.request.set_raw_body")
    assert.equal(1, #set)
    return set[1][1], k
  end

  local function assert_error(k, status, error_type)
    local exits = calls_named(k, "response.exit")
    assert.equal(1, #exits)
    local status_sent, body, headers = exits[1][1], exits[1][2], exits[1][3]
    assert.equal(status, status_sent)
    assert.equal("application/json", headers["Content-Type"])
    local doc = cjson.decode(body)
    assert.equal("error", doc.type)
    assert.equal(error_type, doc.error.type)
    assert.is_string(doc.error.message)
    assert.same({}, calls_named(k, "service.request.set_raw_body"))
    return doc.error.message
  end

  it("declares a priority and a version", function()
    assert.is_number(handler.PRIORITY)
    assert.matches("^%d+%.%d+%.%d+$", handler.VERSION)
    for _, phase in ipairs({ "init_worker", "access", "header_filter", "body_filter", "log" }) do
      assert.is_function(handler[phase], phase)
    end
  end)

  it("logs nothing in init_worker when no catalog sits at the default path", function()
    local installed = io.open(require("kong.plugins.aws-masker.catalog_path").DEFAULT, "rb")
    if installed then
      installed:close()
      return pending("a catalog is installed at the default path on this host")
    end
    local k = new_request({})
    handler:init_worker()
    assert.same({}, k.log_lines)
  end)

  it("masks the body in access and forwards it with set_raw_body", function()
    local text = "Stop " .. table.concat(IDENTIFIERS, ", ") .. " now."
    local forwarded, k = masked_exchange(new_conf(counting_store()), text)

    for _, id in ipairs(IDENTIFIERS) do
      assert.is_nil(forwarded:find(id, 1, true), id)
    end
    local doc = cjson.decode(forwarded)
    assert.equal("claude-sonnet-4-5", doc.model)
    assert.matches("^Stop AWS_EC2_000001, AWS_", doc.messages[1].content)
    assert.same({ { "Accept-Encoding" } }, calls_named(k, "service.request.clear_header"))
    assert.same({}, calls_named(k, "response.exit"))
    assert.equal(#IDENTIFIERS, k.ctx.plugin.state.masked)
  end)

  it("masks request headers with the body and sets them with set_headers", function()
    local k = new_request(json_request(messages_body("stop i-0a1b2c3d4e5f67890"),
      { ["X-Debug"] = { "i-0a1b2c3d4e5f67890", "ok" }, ["Anthropic-Version"] = "2023-06-01" }))
    handler:access(new_conf(counting_store()))
    assert.equal(1, #calls_named(k, "service.request.set_raw_body"))
    assert.same({ { { ["x-debug"] = { "AWS_EC2_000001", "ok" } } } },
      calls_named(k, "service.request.set_headers"))
  end)

  it("refuses a request whose headers Kong could not read in full", function()
    local extra = {}
    for n = 1, 1001 do
      extra["x-h" .. n] = "v"
    end
    local k = new_request(json_request(messages_body("hi"), extra))
    handler:access(new_conf(counting_store()))
    assert.matches("headers", assert_error(k, 400, "invalid_request_error"))
  end)

  it("forwards a body without identifiers as it came", function()
    local k = new_request(json_request(messages_body("nothing to hide here")))
    handler:access(new_conf(counting_store()))
    assert.same({}, calls_named(k, "service.request.set_raw_body"))
    assert.same({}, calls_named(k, "response.exit"))
  end)

  it("answers 503 and forwards nothing when the mapping store is down", function()
    local k = new_request(json_request(messages_body("instance " .. IDENTIFIERS[1])))
    handler:access(new_conf(unreachable_store()))
    local message = assert_error(k, 503, "api_error")
    assert.matches("mapping store", message)

    handler:log(nil)
    local line = k.log_lines[#k.log_lines]
    assert.equal("err", line.level)
    assert.matches('store_error="redis connect: connection refused"', line.line, 1, true)
    assert.is_nil(line.line:find(IDENTIFIERS[1], 1, true))
  end)

  it("forwards unmasked and logs fail_open=1 when fail_mode is open", function()
    local conf = new_conf(unreachable_store(), { fail_mode = "open" })
    local k = new_request(json_request(messages_body("instance " .. IDENTIFIERS[1])))
    handler:access(conf)
    assert.same({}, calls_named(k, "response.exit"))
    assert.same({}, calls_named(k, "service.request.set_raw_body"))
    handler:log(conf)
    assert.equal("warn", k.log_lines[#k.log_lines].level)
    assert.matches("fail_open=1", k.log_lines[#k.log_lines].line, 1, true)
  end)

  -- The scopes a store was asked for, in order, around a counting store.
  local function scope_recording_store()
    local store = counting_store()
    local assign = store.assign
    store.scopes = {}
    function store.assign(self, scope, findings)
      self.scopes[#self.scopes + 1] = scope
      return assign(self, scope, findings)
    end
    return store
  end

  it("scopes by the configured header's value under scope_by header", function()
    local store = scope_recording_store()
    local conf = new_conf(store, { scope_by = "header", scope_header = "X-Consumer-Username" })
    local text = messages_body("instance " .. IDENTIFIERS[1])
    local sent = {
      { ["X-Consumer-Username"] = "team-a" },
      { ["X-Consumer-Username"] = "team-a", ["x-api-key"] = "sk-ant-someone-else" },
      { ["x-consumer-username"] = "team-b" },
    }
    for _, headers in ipairs(sent) do
      local k = new_request(json_request(text, headers))
      handler:access(conf)
      assert.same({}, calls_named(k, "response.exit"))
      assert.equal(1, #calls_named(k, "service.request.set_raw_body"))
    end
    assert.equal(store.scopes[1], store.scopes[2])
    assert.not_equal(store.scopes[1], store.scopes[3])
  end)

  it("answers 400 naming the header and forwards nothing when the scope header is missing",
    function()
      local store = scope_recording_store()
      local conf = new_conf(store, { scope_by = "header", scope_header = "X-Team" })
      for _, value in ipairs({ false, "" }) do
        local k = new_request(json_request(messages_body("instance " .. IDENTIFIERS[1]),
          { ["X-Team"] = value }))
        handler:access(conf)
        assert.matches("X-Team header is required",
          assert_error(k, 400, "invalid_request_error"), 1, true)
      end
      assert.equal(0, store.calls)
    end)

  it("puts every credential in one scope under scope_by global", function()
    local store = scope_recording_store()
    local conf = new_conf(store, { scope_by = "global" })
    local text = messages_body("instance " .. IDENTIFIERS[1])
    for _, headers in ipairs({ {}, { ["x-api-key"] = "sk-ant-someone-else" },
        { ["x-api-key"] = false, Authorization = "Bearer b" } }) do
      local k = new_request(json_request(text, headers))
      handler:access(conf)
      assert.equal(1, #calls_named(k, "service.request.set_raw_body"))
    end
    assert.equal(store.scopes[1], store.scopes[2])
    assert.equal(store.scopes[1], store.scopes[3])
  end)

  it("answers 400 to malformed JSON", function()
    local k = new_request(json_request('{"messages": [ "i-0a1b2c3d4e5f67890" '))
    handler:access(new_conf(counting_store()))
    assert.matches("^malformed JSON", assert_error(k, 400, "invalid_request_error"))
  end)

  it("answers 400 to an identifier in the request URL and forwards nothing", function()
    local request = json_request(messages_body("x"))
    request.path = "/v1/messages?note=i%2D0a1b2c3d4e5f67890"
    local k = new_request(request)
    handler:access(new_conf(counting_store()))
    assert.matches("request URL", assert_error(k, 400, "invalid_request_error"), 1, true)
    assert.same({}, calls_named(k, "service.request.set_raw_body"))
  end)

  it("answers 400 to compressed and to non-JSON bodies", function()
    local conf = new_conf(counting_store())
    local k = new_request(json_request(messages_body("x"), { ["Content-Encoding"] = "gzip" }))
    handler:access(conf)
    assert_error(k, 400, "invalid_request_error")

    k = new_request(json_request("a=1", { ["Content-Type"] = "multipart/form-data" }))
    handler:access(conf)
    assert_error(k, 400, "invalid_request_error")
  end)

  it("answers 413 to a declared length over the limit without reading the body", function()
    local body = messages_body(string.rep("x", 5000))
    local k = new_request(json_request(body))
    handler:access(new_conf(counting_store()))
    assert.equal("request body exceeds the gateway limit of 4096 bytes",
      assert_error(k, 413, "request_too_large"))
    assert.same({}, calls_named(k, "request.get_raw_body"))
  end)

  it("answers 413 to a chunked body over the limit and to a body spooled to a file", function()
    local conf = new_conf(counting_store())
    local body = messages_body(string.rep("x", 5000))
    local k = new_request(json_request(body,
      { ["Content-Length"] = false, ["Transfer-Encoding"] = "chunked" }))
    handler:access(conf)
    assert_error(k, 413, "request_too_large")

    k = new_request(json_request(nil, { ["Content-Length"] = "100" }))
    handler:access(conf)
    assert_error(k, 413, "request_too_large")
    assert.is_true(k.ctx.plugin.state.body_file)
  end)

  it("clears Content-Length and restores a JSON response buffered by get_raw_body", function()
    local conf = new_conf(counting_store())
    local forwarded, k = masked_exchange(conf, "Describe " .. IDENTIFIERS[2] .. " and "
      .. IDENTIFIERS[1])
    local tokens = {}
    for token in forwarded:gmatch("AWS_[A-Z0-9_]-_%d%d%d%d%d%d") do
      tokens[#tokens + 1] = token
    end
    assert.equal(2, #tokens)

    local upstream = cjson.encode({ id = "msg_1", type = "message", role = "assistant",
      content = { { type = "text", text = tokens[1] .. " is attached to " .. tokens[2] },
        { type = "tool_use", id = "toolu_1", name = "stop", input = { [tokens[2]] = "x" } } } })
    k.response_state.headers["content-type"] = "application/json"
    k.response_state.headers["content-length"] = tostring(#upstream)
    handler:header_filter(conf)
    assert.same(RESTORED_HEADERS, calls_named(k, "response.clear_header"))

    local out = run_body_filter(handler, conf, split(upstream, 7))
    local doc = cjson.decode(out)
    assert.equal(IDENTIFIERS[2] .. " is attached to " .. IDENTIFIERS[1], doc.content[1].text)
    assert.equal("x", doc.content[2].input[IDENTIFIERS[1]])
    assert.equal(1, #calls_named(k, "response.set_raw_body"))
  end)

  it("leaves an empty response body empty", function()
    local conf = new_conf(counting_store())
    local _, k = masked_exchange(conf, "Stop " .. IDENTIFIERS[1])
    k.response_state.headers["content-type"] = "application/json"
    handler:header_filter(conf)
    assert.equal("", run_body_filter(handler, conf, { "", "" }))
    assert.same({}, calls_named(k, "response.set_raw_body"))
  end)

  -- A masked request for an instance in a VPC, and the SSE answer to it: its tokens cut
  -- across deltas (and, by the callers, the deltas across chunks).
  local function streamed_exchange(conf)
    local forwarded, k = masked_exchange(conf, "Where is " .. IDENTIFIERS[1] .. " in "
      .. IDENTIFIERS[4] .. "?")
    local ec2 = forwarded:match("AWS_EC2_%d+")
    local vpc = forwarded:match("AWS_VPC_%d+")
    assert.is_string(ec2)
    assert.is_string(vpc)

    local function event(name, data)
      return "event: " .. name .. "\ndata: " .. cjson.encode(data) .. "\n\n"
    end
    local answer = { "Instance ", ec2:sub(1, 6), ec2:sub(7), " runs in ", vpc, "." }
    local parts = { event("message_start", { type = "message_start",
      message = { id = "msg_1", type = "message", role = "assistant", content = {} } }),
      event("content_block_start", { type = "content_block_start", index = 0,
        content_block = { type = "text", text = "" } }) }
    for _, piece in ipairs(answer) do
      parts[#parts + 1] = event("content_block_delta", { type = "content_block_delta",
        index = 0, delta = { type = "text_delta", text = piece } })
    end
    parts[#parts + 1] = event("content_block_stop", { type = "content_block_stop", index = 0 })
    parts[#parts + 1] = event("message_stop", { type = "message_stop" })
    return table.concat(parts), k
  end
  local STREAMED_TEXT = "Instance " .. IDENTIFIERS[1] .. " runs in " .. IDENTIFIERS[4] .. "."

  -- The text of the text deltas in an SSE body.
  local function restored_text(out)
    local text = {}
    for data in out:gmatch("data: ([^\n]+)") do
      local doc = cjson.decode(data)
      if doc.type == "content_block_delta" then
        text[#text + 1] = doc.delta.text
      end
    end
    return table.concat(text)
  end

  it("restores a streamed SSE response chunk by chunk, exactly", function()
    local conf = new_conf(counting_store())
    local stream, k = streamed_exchange(conf)

    k.response_state.headers["content-type"] = "text/event-stream; charset=utf-8"
    handler:header_filter(conf)
    assert.same(RESTORED_HEADERS, calls_named(k, "response.clear_header"))

    local whole
    for _, size in ipairs({ #stream, 13, 1 }) do
      -- each run is a new response of the same request: reset the stream state
      pipeline.restore_start(k.ctx.plugin.state, "text/event-stream", nil)
      local out = run_body_filter(handler, conf, split(stream, size))
      assert.equal(STREAMED_TEXT, restored_text(out))
      assert.is_nil(out:find("AWS_", 1, true))
      whole = whole or out
      assert.equal(whole, out) -- the same bytes however the stream was cut
    end
    assert.same({}, calls_named(k, "response.get_raw_body")) -- a stream is never buffered
  end)

  it("records the thinking blocks it passes on from a timer, under the request's scope",
    function()
      local thinking = require "aws_masker.thinking"
      local block = { type = "thinking", thinking = "use 10.0.0.0/16", signature = "c2ln" }
      local upstream = cjson.encode({ type = "message", content = { block,
        { type = "text", text = "ok" } } })
      local saved = ngx.timer.at
      for _, failing in ipairs({ false, true }) do
        local store = counting_store()
        local written = {}
        function store.remember_thinking(_, scope, digests)
          if failing then
            return nil, "redis connect: connection refused"
          end
          written[#written + 1] = { scope, digests }
          return true
        end
        local conf = new_conf(store)
        -- Nothing to mask: the response is not restored, its blocks are recorded all the same.
        local k = new_request(json_request(messages_body("nothing to hide")))
        handler:access(conf)
        k.response_state.headers["content-type"] = "application/json"
        handler:header_filter(conf)
        local timers = {}
        ngx.timer.at = function(delay, fn, ...) -- luacheck: ignore 122
          timers[#timers + 1] = { delay, fn, { ... } }
          return true
        end
        local ok, out = pcall(run_body_filter, handler, conf, split(upstream, 9))
        ngx.timer.at = saved -- luacheck: ignore 122
        assert(ok, out)
        assert.equal(upstream, out)
        assert.equal(1, #timers)
        assert.equal(0, timers[1][1])
        timers[1][2](false, unpack(timers[1][3])) -- the timer runs after the phase
        local scope = k.ctx.plugin.state.scope
        assert.is_string(scope)
        if failing then
          assert.same({}, written)
          assert.equal("err", k.log_lines[#k.log_lines].level)
          assert.matches("event=thinking_record blocks=1 error=\"redis connect",
            k.log_lines[#k.log_lines].line, 1, true)
        else
          assert.same({ { scope, { thinking.block_digest(block) } } }, written)
        end
      end
    end)

  local zlib = require "zlib"
  local function gzip(data)
    return (zlib.deflate(6, 31)(data, "finish"))
  end

  it("decodes a gzip JSON response buffered by get_raw_body and sends it plain", function()
    local conf = new_conf(counting_store())
    local forwarded, k = masked_exchange(conf, "Describe " .. IDENTIFIERS[1])
    local token = forwarded:match("AWS_EC2_%d+")
    local upstream = gzip(cjson.encode({ type = "message",
      content = { { type = "text", text = token .. " is stopped" } } }))
    k.response_state.headers["content-type"] = "application/json"
    k.response_state.headers["content-encoding"] = "gzip"
    k.response_state.headers["content-length"] = tostring(#upstream)
    handler:header_filter(conf)
    assert.same(RESTORED_HEADERS, calls_named(k, "response.clear_header"))
    assert.is_nil(k.response_state.headers["content-encoding"])

    local out = run_body_filter(handler, conf, split(upstream, 3))
    assert.equal(IDENTIFIERS[1] .. " is stopped", cjson.decode(out).content[1].text)
    handler:log(conf)
    assert.matches(" decoded=gzip", k.log_lines[#k.log_lines].line, 1, true)
  end)

  -- The streamed exchange with its answer gzip-encoded, past the header_filter phase.
  local function gzip_stream_exchange(conf)
    local stream, k = streamed_exchange(conf)
    k.response_state.headers["content-type"] = "text/event-stream"
    k.response_state.headers["content-encoding"] = "gzip"
    handler:header_filter(conf)
    return gzip(stream), k
  end

  it("decodes a gzip SSE response chunk by chunk, never buffering it", function()
    local conf = new_conf(counting_store())
    local data, k = gzip_stream_exchange(conf)
    assert.same(RESTORED_HEADERS, calls_named(k, "response.clear_header"))

    for _, size in ipairs({ 1, 5, #data }) do
      pipeline.restore_start(k.ctx.plugin.state, "text/event-stream", "gzip")
      local out = run_body_filter(handler, conf, split(data, size))
      assert.equal(STREAMED_TEXT, restored_text(out))
      assert.is_nil(out:find("AWS_", 1, true))
    end
    assert.same({}, calls_named(k, "response.get_raw_body"))
  end)

  it("ends a gzip SSE response that breaks off with an SSE error event", function()
    local conf = new_conf(counting_store())
    local data = gzip_stream_exchange(conf)

    local saved = rawget(ngx, "arg")
    local chunks, out, ended_at = split(data:sub(1, #data - 4), 9), {}, nil
    for i, chunk in ipairs(chunks) do
      ngx.arg = { chunk, i == #chunks }
      handler:body_filter(conf)
      out[#out + 1] = ngx.arg[1] or ""
      if ngx.arg[2] then
        ended_at = ended_at or i
      end
    end
    ngx.arg = saved
    assert.equal(#chunks, ended_at)
    local body = table.concat(out)
    assert.equal(STREAMED_TEXT, restored_text(body:gsub("event: error\n.*$", "")))
    local err = cjson.decode(body:match("event: error\ndata: ([^\n]+)\n\n$"))
    assert.equal("api_error", err.error.type)
    assert.matches("truncated", err.error.message, 1, true)
  end)

  it("answers 502 in place of a br-encoded answer, without reading it", function()
    local conf = new_conf(counting_store())
    local _, k = masked_exchange(conf, "Stop " .. IDENTIFIERS[1])
    k.response_state.headers["content-type"] = "application/json"
    k.response_state.headers["content-encoding"] = "br"
    k.response_state.headers["content-length"] = "9"
    handler:header_filter(conf)
    assert.same({ { 502 } }, calls_named(k, "response.set_status"))
    assert.same({ { "Content-Type", "application/json" } },
      calls_named(k, "response.set_header"))
    assert.same(RESTORED_HEADERS, calls_named(k, "response.clear_header"))

    local out = run_body_filter(handler, conf, { "\139\0\128", "not read" })
    local doc = cjson.decode(out)
    assert.equal("api_error", doc.error.type)
    assert.matches("answered in br encoding", doc.error.message, 1, true)
    assert.same({}, calls_named(k, "response.get_raw_body"))
    handler:log(conf)
    assert.equal("err", k.log_lines[#k.log_lines].level)
  end)

  it("leaves the response of a rejected request alone", function()
    local conf = new_conf(unreachable_store())
    local k = new_request(json_request(messages_body(IDENTIFIERS[1])))
    handler:access(conf)
    k.response_state.headers["content-type"] = "application/json"
    handler:header_filter(conf)
    assert.same({}, calls_named(k, "response.clear_header"))
    assert.equal("", run_body_filter(handler, conf, { "" }))
  end)

  it("writes one log line with counts and no original value", function()
    local conf = new_conf(counting_store())
    local _, k = masked_exchange(conf, "Stop " .. table.concat(IDENTIFIERS, " "))
    handler:log(conf)
    assert.equal(1, #k.log_lines)
    local line = k.log_lines[1]
    assert.equal("notice", line.level)
    assert.matches("^aws_masker status=200 masked=4 distinct=4 types=", line.line)
    for _, id in ipairs(IDENTIFIERS) do
      assert.is_nil(line.line:find(id, 1, true))
    end
  end)

  it("builds a pipeline from the plugin configuration without touching Redis", function()
    local conf = { catalog_path = AWS_MASKER_TEST_CATALOG, scope_secret = SECRET,
      max_body_bytes = 1024, fail_mode = "closed", mapping_ttl_seconds = 60,
      redis = { host = "127.0.0.1", port = 1, database = 0, connect_timeout_ms = 100,
        send_timeout_ms = 100, read_timeout_ms = 100, pool_size = 4, keepalive_ms = 1000 } }
    local p = assert(pipelines.get(conf))
    assert.equal(p, pipelines.get(conf))
    assert.equal(catalog, p.catalog)
    assert.equal("credential", p.scope_by)

    local by_header = { scope_by = "header", scope_header = "X-Team" }
    for key, value in pairs(conf) do
      by_header[key] = by_header[key] or value
    end
    assert.equal("X-Team", assert(pipelines.get(by_header)).scope_header)

    local missing = { catalog_path = "/nonexistent/aws_patterns.json", scope_secret = SECRET,
      max_body_bytes = 1024, redis = { host = "127.0.0.1" } }
    local k = new_request(json_request(messages_body("x")))
    handler:access(missing)
    assert_error(k, 500, "api_error")
    assert.matches("cannot open catalog", k.log_lines[1].line, 1, true)
  end)
end)
