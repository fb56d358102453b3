-- The nginx_lua engine: the masking core wired to nginx phases.
--
-- init(config_path) reads a JSON configuration (rendered by the gateway role) with exactly
-- these keys:
--   catalog_path         the pattern catalog as JSON (catalog/aws_patterns.yml converted)
--   redis                { host, port, password, database, connect_timeout_ms,
--                          send_timeout_ms, read_timeout_ms, pool_size, keepalive_ms }
--   mapping_ttl_seconds  sliding lifetime of a token (604800: a week)
--   scope_secret         HMAC key turning a client credential into its token scope
--   max_body_bytes       largest request body masked; larger ones get 413
--   fail_mode            "closed" (default: nothing unmasked is ever forwarded) or "open"
--                        (store failures forward the body unmasked, logged as fail_open=1)
--
-- Phases: access() masks the request body, header_filter() and body_filter() restore the
-- response, log() writes one key=value line per request; status() serves a JSON health page
-- and error_page(status) Anthropic-shaped bodies for the errors nginx raises itself.
-- Counters are shared across workers when `lua_shared_dict aws_masker_stats 1m;` is declared.

local cjson = require "cjson.safe"
local catalog_mod = require "aws_masker.catalog"
local json_body = require "aws_masker.json_body"
local mapping_store = require "aws_masker.mapping_store"
local unmask = require "aws_masker.unmask"
local sse = require "aws_masker.sse"
local errors = require "aws_masker.errors"
local scope_mod = require "aws_masker.scope"

local ngx = ngx
local ngx_var = ngx.var
local ngx_log = ngx.log
local ngx_now = ngx.now
local update_time = ngx.update_time
local req = ngx.req
local shared = ngx.shared
local NOTICE, WARN, ERR = ngx.NOTICE, ngx.WARN, ngx.ERR
local find = string.find
local lower = string.lower
local format = string.format
local concat = table.concat
local sort = table.sort
local pairs = pairs
local tonumber = tonumber
local type = type
local io_open = io.open

local _M = {}

local config, catalog, store
local worker_counters = {}

local COUNTERS = { "requests", "masked_requests", "identifiers_masked", "store_errors",
  "fail_open", "rejected_400", "rejected_413", "rejected_500", "rejected_502", "rejected_503",
  "rejected_504",
  "tokens_restored", "unknown_tokens" }

local function count(name, n)
  local dict = shared.aws_masker_stats
  if dict then
    dict:incr(name, n or 1, 0)
  else
    worker_counters[name] = (worker_counters[name] or 0) + (n or 1)
  end
end

local function elapsed_ms(start)
  update_time()
  return (ngx_now() - start) * 1000
end

local function read_all(path)
  local f, err = io_open(path, "rb")
  if not f then
    return nil, err
  end
  local data = f:read("*a")
  f:close()
  return data
end

local function check_config(c)
  if type(c) ~= "table" then
    return nil, "configuration must be a JSON object"
  end
  if type(c.catalog_path) ~= "string" then
    return nil, "catalog_path must be a path"
  end
  if type(c.redis) ~= "table" or type(c.redis.host) ~= "string" then
    return nil, "redis.host must be set"
  end
  if type(c.scope_secret) ~= "string" or #c.scope_secret < 16 then
    return nil, "scope_secret must be a string of at least 16 characters"
  end
  if type(c.max_body_bytes) ~= "number" or c.max_body_bytes < 1 then
    return nil, "max_body_bytes must be a positive number"
  end
  c.fail_mode = c.fail_mode or "closed"
  if c.fail_mode ~= "closed" and c.fail_mode ~= "open" then
    return nil, "fail_mode must be 'closed' or 'open'"
  end
  return true
end

-- For init_by_lua: loads and checks the configuration and compiles the catalog, so a bad
-- configuration stops nginx from starting (nginx -t fails) instead of failing requests.
function _M.init(config_path)
  local text, err = read_all(config_path)
  if not text then
    error("aws_masker: cannot read configuration: " .. err, 0)
  end
  local c
  c, err = cjson.decode(text)
  if not c then
    error("aws_masker: configuration is not valid JSON: " .. err, 0)
  end
  local ok
  ok, err = check_config(c)
  if not ok then
    error("aws_masker: " .. err, 0)
  end

  local cat
  cat, err = catalog_mod.load(c.catalog_path)
  if not cat then
    error("aws_masker: " .. err, 0)
  end
  -- Compiles the alternation once in the master; the workers inherit the compiled regex.
  cat:scan("warm up i-00000000")

  local redis = c.redis
  local s
  s, err = mapping_store.new({
    host = redis.host, port = redis.port, password = redis.password,
    database = redis.database, connect_timeout_ms = redis.connect_timeout_ms,
    send_timeout_ms = redis.send_timeout_ms, read_timeout_ms = redis.read_timeout_ms,
    pool_size = redis.pool_size, keepalive_ms = redis.keepalive_ms,
    mapping_ttl_seconds = c.mapping_ttl_seconds,
  })
  if not s then
    error("aws_masker: " .. err, 0)
  end

  config, catalog, store = c, cat, s
  return true
end

function _M.init_worker()
  worker_counters = {}
end

local function reject(st, status, message)
  st.status = status
  st.error = message
  count("rejected_" .. status)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = nil
  ngx.print(errors.body(status, message))
  return ngx.exit(status)
end

local function read_request_body(st)
  req.read_body()
  local body = req.get_body_data()
  if body then
    return body
  end
  local file = req.get_body_file()
  if not file then
    return ""
  end
  -- Only when client_body_buffer_size is below client_max_body_size: read back, size-checked.
  st.body_file = true
  local f, err = io_open(file, "rb")
  if not f then
    return nil, "cannot read the buffered request body: " .. err
  end
  body = f:read(config.max_body_bytes + 1)
  f:close()
  return body or ""
end

-- "CODE:n,..." occurrences per token code, and their total.
local function count_types(edits)
  local counts, total = {}, 0
  for e = 1, #edits do
    local matches = edits[e].matches
    for k = 1, #matches do
      local code = matches[k].code
      counts[code] = (counts[code] or 0) + 1
    end
    total = total + #matches
  end
  local parts = {}
  for code, n in pairs(counts) do
    parts[#parts + 1] = code .. ":" .. n
  end
  sort(parts)
  return concat(parts, ","), total
end

function _M.access()
  local st = { masked = 0, distinct = 0 }
  ngx.ctx.aws_masker = st
  count("requests")
  update_time()
  local start = ngx_now()

  -- The upstream must answer uncompressed, or its response could not be restored.
  req.clear_header("Accept-Encoding")

  local encoding = ngx_var.http_content_encoding
  if encoding and lower(encoding) ~= "identity" then
    return reject(st, 400, "compressed request bodies are not supported; "
      .. "send the body without Content-Encoding")
  end

  -- Only JSON is masked; anything else would have to be forwarded unmasked (multipart uploads
  -- of the Files API are refused until they can be masked).
  local ctype = ngx_var.http_content_type
  if ctype and not find(lower(ctype), "json", 1, true) then
    if (tonumber(ngx_var.http_content_length) or 0) > 0 or ngx_var.http_transfer_encoding then
      return reject(st, 400, "only JSON request bodies can pass the masking gateway")
    end
  end

  local max = config.max_body_bytes
  local length = tonumber(ngx_var.http_content_length)
  if length and length > max then
    return reject(st, 413, "request body exceeds the gateway limit of " .. max .. " bytes")
  end

  local body, err = read_request_body(st)
  if not body then
    return reject(st, 500, err)
  end
  if #body > max then
    return reject(st, 413, "request body exceeds the gateway limit of " .. max .. " bytes")
  end
  st.bytes_in = #body
  if body == "" then
    return
  end

  local plan
  plan, err = json_body.scan(body, catalog)
  if not plan then
    if find(err, "^malformed") then
      return reject(st, 400, err)
    end
    return reject(st, 500, "masking failed: " .. err)
  end
  st.scan_ms = elapsed_ms(start)

  local findings = plan.findings
  if #findings == 0 then
    return
  end

  local credential = scope_mod.credential(ngx_var.http_x_api_key, ngx_var.http_authorization)
  local scope = scope_mod.from_credential(config.scope_secret, credential)
  local store_start = ngx_now()
  local tokens
  tokens, err = store:assign(scope, findings)
  st.store_ms = elapsed_ms(store_start)
  if not tokens then
    count("store_errors")
    st.store_error = err
    if config.fail_mode == "open" then
      count("fail_open")
      st.fail_open = true
      return
    end
    return reject(st, 503, "the mapping store is unavailable; the request was not forwarded")
  end

  req.set_body_data(json_body.rewrite(plan, tokens))

  local originals = {}
  for i = 1, #findings do
    originals[tokens[i]] = findings[i].value
  end
  local types, masked = count_types(plan.edits)
  st.originals = originals
  st.masked, st.distinct, st.types = masked, #findings, types
  st.mask_ms = elapsed_ms(start)
  count("masked_requests")
  count("identifiers_masked", masked)
end

function _M.header_filter()
  local st = ngx.ctx.aws_masker
  if not st or not st.originals then
    return
  end

  local encoding = ngx.header["Content-Encoding"]
  if encoding and lower(encoding) ~= "identity" then
    st.response_encoded = true -- tokens stay in the response: it cannot be read
    return
  end

  -- JSON, event streams and text are restored; other media (file downloads) pass untouched.
  local ctype = lower(ngx.header["Content-Type"] or "application/json")
  local stream = find(ctype, "text/event-stream", 1, true)
  if not stream and not find(ctype, "json", 1, true) and not find(ctype, "text/", 1, true) then
    return
  end

  local restorer = unmask.new(st.originals)
  st.restorer = restorer
  if stream then
    st.stream = sse.new(restorer)
  else
    st.chunks, st.nchunks = {}, 0
  end
  ngx.header["Content-Length"] = nil
end

function _M.body_filter()
  local st = ngx.ctx.aws_masker
  if not st or not st.restorer then
    return
  end
  local chunk, eof = ngx.arg[1], ngx.arg[2]

  if st.stream then
    local out, err = st.stream:feed(chunk)
    if not out then
      st.restore_error = err
      out = chunk
    end
    if eof then
      local tail
      tail, err = st.stream:finish()
      if tail then
        out = out .. tail
      else
        st.restore_error = err
      end
    end
    ngx.arg[1] = out
    return
  end

  if chunk ~= "" then
    st.nchunks = st.nchunks + 1
    st.chunks[st.nchunks] = chunk
  end
  if not eof then
    ngx.arg[1] = nil
    return
  end
  local body = concat(st.chunks, "", 1, st.nchunks)
  st.chunks = nil
  local out, err = st.restorer:json_body(body)
  if not out then
    st.restore_error = err
    out = body
  end
  ngx.arg[1] = out
end

function _M.log()
  local st = ngx.ctx.aws_masker
  if not st then
    return
  end
  local restorer = st.restorer
  local restored = restorer and restorer.restored or 0
  local unknown = restorer and restorer.unknown or 0
  if restored > 0 then
    count("tokens_restored", restored)
  end
  if unknown > 0 then
    count("unknown_tokens", unknown)
  end

  local level = NOTICE
  if st.store_error or st.restore_error then
    level = st.fail_open and WARN or ERR
  end
  ngx_log(level, "aws_masker status=", st.status or ngx.status,
    " masked=", st.masked, " distinct=", st.distinct, " types=", st.types or "-",
    " restored=", restored, " unknown_tokens=", unknown,
    " bytes_in=", st.bytes_in or 0,
    " scan_ms=", format("%.2f", st.scan_ms or 0),
    " store_ms=", format("%.2f", st.store_ms or 0),
    " mask_ms=", format("%.2f", st.mask_ms or 0),
    st.stream and " stream=1" or "",
    st.fail_open and " fail_open=1" or "",
    st.body_file and " body_file=1" or "",
    st.response_encoded and " response_encoded=1" or "",
    st.error and (' error="' .. st.error .. '"') or "",
    st.store_error and (' store_error="' .. st.store_error .. '"') or "",
    st.restore_error and (' restore_error="' .. st.restore_error .. '"') or "")
end

-- content_by_lua for a loopback status location.
function _M.status()
  local dict = shared.aws_masker_stats
  local parts = { '{"status":"healthy","engine":"nginx_lua","counters_scope":"',
    dict and "all_workers" or "worker", '"' }
  for i = 1, #COUNTERS do
    local name = COUNTERS[i]
    local v
    if dict then
      v = dict:get(name)
    else
      v = worker_counters[name]
    end
    parts[#parts + 1] = ',"' .. name .. '":' .. (v or 0)
  end
  parts[#parts + 1] = "}"
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.say(concat(parts))
end

local ERROR_PAGE_MESSAGES = {
  [413] = "request body exceeds the gateway limit",
  [500] = "internal gateway error",
  [502] = "the upstream API could not be reached",
  [504] = "the upstream API did not answer in time",
}

-- content_by_lua for a named location behind `error_page <status> = @name`: errors nginx
-- produces itself (body over client_max_body_size before any Lua phase, upstream unreachable)
-- get the API's error shape instead of an HTML page.
function _M.error_page(status)
  status = status or 500
  count("rejected_" .. status)
  local message = ERROR_PAGE_MESSAGES[status] or "gateway error"
  if status == 413 and config then
    message = message .. " of " .. config.max_body_bytes .. " bytes"
  end
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(errors.body(status, message))
  return ngx.exit(status)
end

function _M.request_too_large()
  return _M.error_page(413)
end

return _M
