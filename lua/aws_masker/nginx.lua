-- The nginx_lua engine: the masking core wired to nginx phases.
--
-- init(config_path) reads a JSON configuration (rendered by the gateway role) with exactly
-- these keys:
--   catalog_path         the pattern catalog as JSON (catalog/aws_patterns.yml converted)
--   redis                { host, port, password, database, connect_timeout_ms,
--                          send_timeout_ms, read_timeout_ms, pool_size, keepalive_ms }
--   mapping_ttl_seconds  sliding lifetime of a token (604800: a week)
--   scope_secret         HMAC key turning a client credential into its token scope
--   scope_by             what the token scope is the HMAC of: "credential" (default: the
--                        x-api-key header, else Authorization), "header" (the value of
--                        scope_header; a request without it gets 400) or "global" (one scope)
--   scope_header         the request header naming the scope under scope_by "header"
--   max_body_bytes       largest request body masked; larger ones get 413
--   fail_mode            "closed" (default: nothing unmasked is ever forwarded) or "open"
--                        (store failures forward the body unmasked, logged as fail_open=1)
--   canary_secret        optional: secret of the x-aws-masker-canary header (aws_masker.canary)
--
-- Phases: access() masks the request body, header_filter() and body_filter() restore the
-- response, log() writes one key=value line per request; status() serves a JSON health page
-- and error_page(status) Anthropic-shaped bodies for the errors nginx raises itself. The work
-- itself is aws_masker.pipeline's; this module only reads and writes through nginx.
-- Counters are shared across workers when `lua_shared_dict aws_masker_stats 1m;` is declared.

local cjson = require "cjson.safe"
local pipeline = require "aws_masker.pipeline"
local errors = require "aws_masker.errors"
local request_headers = require "aws_masker.request_headers"
local thinking = require "aws_masker.thinking"
local canary = require "aws_masker.canary"

local ngx = ngx
local ngx_var = ngx.var
local ngx_log = ngx.log
local req = ngx.req
local shared = ngx.shared
local timer_at = ngx.timer.at
local pairs = pairs
local concat = table.concat
local gsub = string.gsub
local lower = string.lower
local type = type
local io_open = io.open

local LOG_LEVELS = { notice = ngx.NOTICE, warn = ngx.WARN, err = ngx.ERR }

local _M = {}

local config, masker, canary_gate
-- The ngx.var name of the scope header ("http_x_team" for X-Team), or nil.
local scope_var
local worker_counters = {}

local COUNTERS = { "requests", "masked_requests", "identifiers_masked", "store_errors",
  "fail_open", "rejected_400", "rejected_413", "rejected_500", "rejected_502", "rejected_503",
  "rejected_504",
  "tokens_restored", "unknown_tokens", "log_lines_dropped", "thinking_unrecorded",
  "responses_decoded", "response_decode_errors" }

local function count(name, n)
  local dict = shared.aws_masker_stats
  if dict then
    dict:incr(name, n or 1, 0)
  else
    worker_counters[name] = (worker_counters[name] or 0) + (n or 1)
  end
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
  c.scope_by = c.scope_by or "credential"
  if c.scope_header == "" then
    c.scope_header = nil
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

  -- Compiled once in the master; the workers inherit the compiled regexes.
  local catalog
  catalog, err = pipeline.load_catalog(c.catalog_path)
  if not catalog then
    error("aws_masker: " .. err, 0)
  end
  local store
  store, err = pipeline.new_store(c)
  if not store then
    error("aws_masker: " .. err, 0)
  end
  local p
  p, err = pipeline.new({ catalog = catalog, store = store, scope_secret = c.scope_secret,
    scope_by = c.scope_by, scope_header = c.scope_header,
    max_body_bytes = c.max_body_bytes, fail_mode = c.fail_mode })
  if not p then
    error("aws_masker: " .. err, 0)
  end

  config, masker = c, p
  canary_gate = canary.new(c.canary_secret, c.scope_secret)
  scope_var = p.scope_header and ("http_" .. gsub(lower(p.scope_header), "-", "_")) or nil
  return true
end

function _M.init_worker()
  worker_counters = {}
end

local function reject(failure)
  count("rejected_" .. failure.status)
  ngx.status = failure.status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = nil
  ngx.print(failure.body)
  return ngx.exit(failure.status)
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

function _M.access()
  local st = pipeline.start()
  ngx.ctx.aws_masker = st
  count("requests")

  -- Asks for an uncompressed answer; one compressed anyway is decoded (aws_masker.inflate).
  req.clear_header("Accept-Encoding")

  local ok, failure = masker:check_request(st, ngx_var.http_content_encoding,
    ngx_var.http_content_type, ngx_var.http_content_length, ngx_var.http_transfer_encoding)
  if not ok then
    return reject(failure)
  end
  ok, failure = masker:check_uri(st, ngx_var.request_uri)
  if not ok then
    return reject(failure)
  end
  local is_canary, refusal = canary_gate:classify(st, ngx_var.http_x_aws_masker_canary)
  if is_canary == false then
    return reject(refusal)
  end

  local body, err = read_request_body(st)
  if not body then
    local _, read_failure = pipeline.reject(st, 500, err)
    return reject(read_failure)
  end

  local headers, truncated = req.get_headers(request_headers.MAX_HEADERS)
  if truncated then
    local _, too_many = pipeline.reject(st, 400, request_headers.TOO_MANY)
    return reject(too_many)
  end
  body, failure = masker:mask_body(st, body, ngx_var.http_x_api_key, ngx_var.http_authorization,
    scope_var and ngx_var[scope_var], headers)
  if st.store_error then
    count("store_errors")
  end
  if not body then
    return reject(failure)
  end
  if st.fail_open then
    count("fail_open")
  end
  if is_canary then
    -- Answered here, never proxied: only an over-long canary body comes back.
    local _, too_large = canary.answer(body)
    return reject(too_large)
  end
  if st.body_masked then
    req.set_body_data(body)
  end
  local masked_headers = st.headers
  if masked_headers then
    for name, value in pairs(masked_headers) do
      req.set_header(name, value)
    end
  end
  if st.originals then
    count("masked_requests")
    count("identifiers_masked", st.masked)
  end
end

function _M.header_filter()
  local st = ngx.ctx.aws_masker
  if not st then
    return
  end
  local header = ngx.header
  local restore, failure = pipeline.restore_start(st, header["Content-Type"],
    header["Content-Encoding"])
  if failure then
    count("rejected_" .. failure.status)
    ngx.status = failure.status
    header["Content-Type"] = "application/json"
  end
  if restore or failure then
    header["Content-Length"] = nil
    header["Content-Encoding"] = nil
  end
  thinking.response_start(st, header["Content-Type"], header["Content-Encoding"])
end

-- A thinking block that could not be recorded is refused if the client sends it back with an
-- identifier in it; the response itself is not affected.
local function thinking_unrecorded(blocks, err)
  count("thinking_unrecorded", blocks)
  ngx_log(LOG_LEVELS.err, "aws_masker event=thinking_record blocks=", blocks,
    ' error="', err, '"')
end

function _M.body_filter()
  local st = ngx.ctx.aws_masker
  if st and pipeline.restoring(st) then
    pipeline.restore_arg(st, ngx.arg)
  end
  local digests = st and thinking.response_chunk(st, ngx.arg[1], ngx.arg[2])
  if digests then
    thinking.record_later(masker.store, st.scope, digests, thinking_unrecorded)
  end
end

-- nginx ends every line logged during a request with its request line, Host and Referer: a
-- request refused for an identifier in its URL, or whose headers held one, has its line
-- written from a timer, outside the request.
local function write_apart(_, level, line)
  ngx_log(level, line)
end

function _M.log()
  local st = ngx.ctx.aws_masker
  if not st then
    return
  end
  local restored, unknown = pipeline.restore_counts(st)
  if restored > 0 then
    count("tokens_restored", restored)
  end
  if unknown > 0 then
    count("unknown_tokens", unknown)
  end
  if st.response_decoded then
    count(st.decode_failed and "response_decode_errors" or "responses_decoded")
  end
  local line, level = pipeline.log_line(st, ngx.status)
  if not st.log_apart then
    ngx_log(LOG_LEVELS[level], line)
  elseif not timer_at(0, write_apart, LOG_LEVELS[level], line) then
    count("log_lines_dropped") -- too many timers pending: no line beats one with the value
  end
end

-- content_by_lua for a loopback status location.
-- The gateway is healthy only when its mapping store answers: without it every request is
-- refused (fail closed), so a load balancer must stop sending traffic here. 503 otherwise.
function _M.status()
  local dict = shared.aws_masker_stats
  local store_ok, store_err = masker.store:ping()
  if not store_ok then
    ngx_log(LOG_LEVELS.warn, "event=status store=unreachable error=", store_err)
  end
  local parts = { '{"status":"', store_ok and "healthy" or "unhealthy",
    '","store":"', store_ok and "ok" or "unreachable",
    '","engine":"nginx_lua","counters_scope":"', dict and "all_workers" or "worker", '"' }
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
  ngx.status = store_ok and 200 or 503
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
