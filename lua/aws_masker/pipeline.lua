-- The masking pipeline of one request and its response, the same for every engine.
--
-- An adapter (aws_masker.nginx, kong.plugins.aws-masker.handler) reads the request with its
-- engine's API and hands over plain values: header strings and the whole body. The pipeline
-- decides, masks and keeps the per-request state; the adapter applies the outcome (set the
-- body, send an error, clear Content-Length, pass a chunk on) and keeps its own counters.
--
--   local p = pipeline.new{ catalog =, store =, scope_secret =, scope_by =, scope_header =,
--                           max_body_bytes =, fail_mode = }
--   local st = pipeline.start()
--   local ok, failure = p:check_request(st, content_encoding, content_type, content_length,
--                                       transfer_encoding)
--   local ok, failure = p:check_uri(st, request_uri)  -- path and query string as sent
--   local body, failure = p:mask_body(st, body, api_key, authorization, scope_value, headers)
--     -- scope_value: the value of the header p.scope_header names (nil when that is nil);
--     -- headers: every request header, name -> value or list (at most
--     -- request_headers.MAX_HEADERS: an engine that stops short refuses with TOO_MANY)
--   if st.body_masked then <forward body> end      -- masked; otherwise forward the original
--   for name, value in pairs(st.headers or {}) do <set the header upstream> end
--   if st.log_apart then <write the log line outside the request> end
--   local restore, failure = pipeline.restore_start(st, content_type, content_encoding)
--     -- restore: drop Content-Length and Content-Encoding (the body leaves restored, decoded)
--     -- failure: answer failure.status, application/json, drop both; failure.body follows
--   out, eof = pipeline.restore_chunk(st, chunk, eof) -- nil while a whole body is buffered;
--                                                      -- eof: end the body after out
--   pipeline.restore_arg(st, ngx.arg)             -- the same, in and out through ngx.arg
--   body = pipeline.restore_body(st, body)        -- for engines that buffer the body themselves
--   line, level = pipeline.log_line(st, status)
--
-- A failure is { status =, type =, message =, body = }: body is the Anthropic-shaped error
-- document to send as application/json. Messages name a cause, never a value.

local catalog_mod = require "aws_masker.catalog"
local json_body = require "aws_masker.json_body"
local request_headers = require "aws_masker.request_headers"
local mapping_store = require "aws_masker.mapping_store"
local unmask = require "aws_masker.unmask"
local sse = require "aws_masker.sse"
local errors = require "aws_masker.errors"
local inflate = require "aws_masker.inflate"
local scope_mod = require "aws_masker.scope"
local thinking = require "aws_masker.thinking"

local ngx_now = ngx.now
local unescape_uri = ngx.unescape_uri
local update_time = ngx.update_time
local find = string.find
local lower = string.lower
local format = string.format
local concat = table.concat
local sort = table.sort
local pairs = pairs
local next = next
local tonumber = tonumber
local type = type
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

-- Any text scanned once, so the regexes are compiled (and JIT-compiled) before traffic.
local WARM_UP_TEXT = "warm up i-00000000"

local function elapsed_ms(start)
  update_time()
  return (ngx_now() - start) * 1000
end

-- Loads and compiles a catalog file (JSON) and runs one scan so its regexes are compiled.
function _M.load_catalog(path)
  local catalog, err = catalog_mod.load(path)
  if not catalog then
    return nil, err
  end
  local _
  _, err = catalog:scan(WARM_UP_TEXT)
  if err then
    return nil, err
  end
  return catalog
end

-- A mapping store from the configuration's `redis` table and mapping_ttl_seconds. Creating it
-- opens no connection: each request connects (or takes a pooled connection) when it masks.
function _M.new_store(conf)
  local redis = conf.redis
  if type(redis) ~= "table" then
    return nil, "redis settings must be a table"
  end
  return mapping_store.new({
    host = redis.host, port = redis.port, password = redis.password,
    database = redis.database, connect_timeout_ms = redis.connect_timeout_ms,
    send_timeout_ms = redis.send_timeout_ms, read_timeout_ms = redis.read_timeout_ms,
    pool_size = redis.pool_size, keepalive_ms = redis.keepalive_ms,
    mapping_ttl_seconds = conf.mapping_ttl_seconds,
  })
end

-- opts: catalog (compiled), store (anything with :assign(scope, findings, digests) returning
-- the tokens in order, nil and the set of known digests (aws_masker.mapping_store), or nil,
-- err), scope_secret, scope_by ("credential", "header" or "global"),
-- scope_header (the header naming the scope when scope_by is "header"), max_body_bytes,
-- fail_mode ("closed" or "open").
function _M.new(opts)
  if type(opts) ~= "table" or type(opts.catalog) ~= "table" then
    return nil, "pipeline needs a compiled catalog"
  end
  if type(opts.store) ~= "table" then
    return nil, "pipeline needs a mapping store"
  end
  if type(opts.scope_secret) ~= "string" or opts.scope_secret == "" then
    return nil, "pipeline needs a scope secret"
  end
  if type(opts.max_body_bytes) ~= "number" or opts.max_body_bytes < 1 then
    return nil, "max_body_bytes must be a positive number"
  end
  local fail_mode = opts.fail_mode or "closed"
  if fail_mode ~= "closed" and fail_mode ~= "open" then
    return nil, "fail_mode must be 'closed' or 'open'"
  end
  local scope_by = opts.scope_by or "credential"
  if not scope_mod.SCOPE_BY[scope_by] then
    return nil, "scope_by must be 'credential', 'header' or 'global'"
  end
  local scope_header
  if scope_by == "header" then
    scope_header = opts.scope_header
    if not scope_mod.valid_header_name(scope_header) then
      return nil, "scope_header must name a request header when scope_by is 'header'"
    end
  end
  return setmetatable({
    catalog = opts.catalog,
    store = opts.store,
    scope_secret = opts.scope_secret,
    scope_by = scope_by,
    -- Read by the adapters: the header whose value they pass to mask_body, or nil.
    scope_header = scope_header,
    -- The one scope of every request, computed once.
    global_scope = scope_by == "global"
      and scope_mod.from_value(opts.scope_secret, scope_mod.GLOBAL_LABEL) or nil,
    no_scope = scope_header and ("the " .. scope_header .. " header is required: it chooses "
      .. "the token scope; the request was not forwarded"),
    max_body_bytes = opts.max_body_bytes,
    fail_open = fail_mode == "open",
    too_large = "request body exceeds the gateway limit of " .. opts.max_body_bytes .. " bytes",
  }, mt)
end

-- The state of one request, kept by the adapter for the response phases and the log line.
function _M.start()
  update_time()
  return { masked = 0, distinct = 0, started = ngx_now() }
end

-- Records a rejection in the request state and returns nil and the failure to send.
function _M.reject(st, status, message)
  st.status = status
  st.error = message
  return nil, {
    status = status,
    type = errors.TYPES[status] or "api_error",
    message = message,
    body = errors.body(status, message),
  }
end
local reject = _M.reject

-- Checks what the request headers say before the body is read. Returns true, or nil and a
-- failure (unsupported encoding or media type, declared length over the limit).
function _M:check_request(st, content_encoding, content_type, content_length, transfer_encoding)
  if content_encoding and lower(content_encoding) ~= "identity" then
    return reject(st, 400, "compressed request bodies are not supported; "
      .. "send the body without Content-Encoding")
  end

  -- Only JSON is masked; anything else would have to be forwarded unmasked (multipart uploads
  -- of the Files API are refused until they can be masked).
  local length = tonumber(content_length)
  if content_type and not find(lower(content_type), "json", 1, true) then
    if (length or 0) > 0 or transfer_encoding then
      return reject(st, 400, "only JSON request bodies can pass the masking gateway")
    end
  end

  if length and length > self.max_body_bytes then
    return reject(st, 413, self.too_large)
  end
  return true
end

-- Checks the request target (path and query string, as sent): it is forwarded as it is, so an
-- identifier in it, plain or percent-encoded, refuses the request. Returns true, or nil and a
-- failure.
function _M:check_uri(st, uri)
  if not uri or uri == "" then
    return true
  end
  local matches, err = self.catalog:scan(uri)
  if not matches and not err then
    matches, err = self.catalog:scan(unescape_uri(uri))
  end
  if err then
    return reject(st, 500, "masking failed: " .. err)
  end
  if matches then
    -- nginx writes the request line beside every log line of the request.
    st.log_apart = true
    return reject(st, 400, "an AWS identifier in the request URL cannot be masked; "
      .. "the request was not forwarded")
  end
  return true
end

-- "CODE:n,..." occurrences per token code, and their total, in the body's edits and the
-- matches of the texts beside it.
local function count_types(edits, text_matches)
  local counts, total = {}, 0
  local function add(matches)
    for k = 1, #matches do
      local code = matches[k].code
      counts[code] = (counts[code] or 0) + 1
    end
    total = total + #matches
  end
  for e = 1, #edits do
    add(edits[e].matches)
  end
  for _, matches in pairs(text_matches) do
    add(matches)
  end
  local parts = {}
  for code, n in pairs(counts) do
    parts[#parts + 1] = code .. ":" .. n
  end
  sort(parts)
  return concat(parts, ","), total
end

-- The token scope of a request, from what scope_by reads.
function _M:scope(api_key, authorization, scope_value)
  local scope_by = self.scope_by
  if scope_by == "global" then
    return self.global_scope
  end
  if scope_by == "header" then
    return scope_mod.from_value(self.scope_secret, scope_value)
  end
  return scope_mod.from_value(self.scope_secret, scope_mod.credential(api_key, authorization))
end

-- Masks a whole request body and the request headers (aws_masker.request_headers) with one
-- store call. api_key and authorization (either may be nil) choose the token scope under
-- scope_by "credential", scope_value (the scope_header's value) under "header"; headers (nil:
-- none) maps names to a value or a list of values. Returns the body to forward, or nil and a
-- failure. The body comes back masked when st.body_masked is set afterwards, st.headers holds
-- the headers to replace upstream (name -> value or list); otherwise the request goes as it
-- came (nothing to mask, or the store failed under fail_mode "open", recorded as st.fail_open
-- and st.store_error). st.originals is set whenever anything was masked.
function _M:mask_body(st, body, api_key, authorization, scope_value, headers)
  -- Refused whether or not the body holds an identifier: a client that has no scope header
  -- must find out at once, not on its first identifier.
  if self.scope_header and not st.scope and (not scope_value or scope_value == "") then
    return reject(st, 400, self.no_scope)
  end
  if #body > self.max_body_bytes then
    return reject(st, 413, self.too_large)
  end
  st.bytes_in = #body
  -- Kept for the response too: the thinking blocks it delivers are recorded under it.
  -- st.scope set already: a scope the adapter chose (the canary's).
  local scope = st.scope or self:scope(api_key, authorization, scope_value)
  st.scope = scope

  local texts, err, client_error
  if headers then
    texts, err, client_error = request_headers.texts(headers, self.catalog)
    if not texts then
      st.log_apart = true
      if client_error then
        return reject(st, 400, err)
      end
      return reject(st, 500, "masking failed: " .. err)
    end
  end
  if body == "" and not (texts and texts[1]) then
    return body
  end

  local start = st.started
  local plan
  plan, err, client_error = json_body.scan(body ~= "" and body or nil, self.catalog, texts)
  if not plan then
    if client_error then
      return reject(st, 400, err)
    end
    return reject(st, 500, "masking failed: " .. err)
  end
  st.scan_ms = elapsed_ms(start)
  -- An engine may write header values beside the request's log lines (nginx: Referer).
  st.log_apart = st.log_apart or next(plan.text_matches) ~= nil

  local findings, digests = plan.findings, plan.digests
  if #findings == 0 and #digests == 0 then
    return body
  end

  local store_start = ngx_now()
  local tokens, known
  tokens, err, known = self.store:assign(scope, findings, digests)
  st.store_ms = elapsed_ms(store_start)
  if not tokens then
    st.store_error = err
    if self.fail_open then
      st.fail_open = true
      return body
    end
    return reject(st, 503, "the mapping store is unavailable; the request was not forwarded")
  end
  st.thinking_checked = #digests
  for i = 1, #digests do
    if not (known and known[digests[i]]) then
      return reject(st, 400, thinking.UNKNOWN)
    end
  end

  local masked = json_body.rewrite(plan, tokens)
  st.body_masked = #plan.edits > 0
  if texts then
    st.headers = request_headers.masked(headers, texts, plan, tokens)
  end
  local originals = {}
  for i = 1, #findings do
    originals[tokens[i]] = findings[i].value
  end
  st.originals = originals
  st.types, st.masked = count_types(plan.edits, plan.text_matches)
  st.distinct = #findings
  st.mask_ms = elapsed_ms(start)
  return masked
end

-- A Content-Encoding name fit for a message: the header comes from the upstream, not from us.
local function coding_name(name)
  if #name > 40 or find(name, "[^%w%-%.,; ]") then
    return "an unknown"
  end
  return name
end

-- Decides from the response headers whether the response is restored, and prepares for it.
-- Returns true when the body will be rewritten: it leaves restored and decoded, so the adapter
-- drops Content-Length and Content-Encoding. Returns false and a failure when a readable
-- answer comes in an encoding the gateway cannot decode: its tokens could not be restored, so
-- the adapter answers failure.status as JSON (both headers dropped) and restore_chunk sends
-- failure.body in place of the answer. Otherwise false: the answer passes as it came.
function _M.restore_start(st, content_type, content_encoding)
  st.restorer, st.stream, st.decoder, st.replacement, st.done = nil, nil, nil, nil, nil
  st.chunks = nil
  if not st.originals then
    return false
  end

  -- JSON, event streams and text are restored; other media (file downloads) pass untouched.
  local ctype = lower(content_type or "application/json")
  local stream = find(ctype, "text/event-stream", 1, true)
  if not stream and not find(ctype, "json", 1, true) and not find(ctype, "text/", 1, true) then
    return false
  end

  local coding, unsupported = inflate.coding(content_encoding)
  if not coding then
    st.response_encoded = true
    local _, failure = reject(st, 502, "the upstream answered in " .. coding_name(unsupported)
      .. " encoding, which the gateway cannot decode; the answer could not be restored")
    st.replacement = failure.body
    return false, failure
  end
  if coding ~= "identity" then
    st.decoder = inflate.new(coding)
    st.response_decoded = coding
  end

  local restorer = unmask.new(st.originals)
  st.restorer = restorer
  st.stream = stream and sse.new(restorer) or nil
  return true
end

-- Ends a response whose encoded body turned out corrupt or truncated: the headers are gone, so
-- the error goes where the body was, in the body's own form (an SSE error event after the
-- events already sent, or an error document in place of a JSON body).
local function decode_failed(st, err)
  st.restore_error = err
  st.decode_failed = true
  st.done = true
  local body = errors.body(502, err .. "; the answer could not be restored")
  local stream = st.stream
  if not stream then
    return body, true
  end
  local tail = stream:finish(true) or ""
  return tail .. "event: error\ndata: " .. body .. "\n\n", true
end

local function restore_json(st, body)
  local out, err = st.restorer:json_body(body)
  if not out then
    st.restore_error = err
    return body
  end
  return out
end

-- Restores a whole response body (JSON, or text), decoding it first when it is compressed. On
-- failure to restore, the body passes as it came and the error is kept for the log line; a
-- body that cannot be decoded is replaced by an error document.
function _M.restore_body(st, body)
  if st.replacement then
    st.done = true
    return st.replacement
  end
  local decoder = st.decoder
  if decoder then
    local decoded, err = decoder:feed(body, true)
    if not decoded then
      return (decode_failed(st, err))
    end
    body = decoded
  end
  return restore_json(st, body)
end

-- Takes the next chunk of the response body (eof: it is the last). Returns what to send now:
-- for a stream, the events complete so far (possibly ""); for a whole body, nil until the last
-- chunk, then the restored body. A compressed body is decoded chunk by chunk first. A second
-- value true means the body ends here: the adapter sets its end-of-body flag, and any later
-- chunk returns "" (an error was sent in place of the rest).
function _M.restore_chunk(st, chunk, eof)
  if st.done then
    return ""
  end
  if st.replacement then
    st.done = true
    return st.replacement, true
  end
  local decoder = st.decoder
  if decoder then
    local err
    chunk, err = decoder:feed(chunk, eof)
    if not chunk then
      return decode_failed(st, err)
    end
  end

  local stream = st.stream
  if stream then
    local out, err = stream:feed(chunk)
    if not out then
      st.restore_error = err
      out = chunk
    end
    if eof then
      local tail
      tail, err = stream:finish()
      if tail then
        out = out .. tail
      else
        st.restore_error = err
      end
    end
    return out
  end

  local chunks = st.chunks
  if not chunks then
    chunks = {}
    st.chunks, st.nchunks = chunks, 0
  end
  if chunk and chunk ~= "" then
    st.nchunks = st.nchunks + 1
    chunks[st.nchunks] = chunk
  end
  if not eof then
    return nil
  end
  local body = concat(chunks, "", 1, st.nchunks)
  st.chunks = nil
  return restore_json(st, body)
end

-- restore_chunk for the body filter of nginx and Kong: takes the chunk and the end-of-body flag
-- from arg (ngx.arg), puts back what to send and, when the body ends early, the flag.
function _M.restore_arg(st, arg)
  local out, eof = _M.restore_chunk(st, arg[1], arg[2])
  arg[1] = out
  if eof then
    arg[2] = true
  end
end

-- Whether the body filter has work: the response is restored (restore_start said yes) or
-- replaced by restore_start's failure.
function _M.restoring(st)
  return st.restorer ~= nil or st.replacement ~= nil
end

-- Whether the response is replaced by an error (sent through restore_chunk, never buffered).
function _M.replacing(st)
  return st.replacement ~= nil
end

-- Whether the response is an event stream (restored chunk by chunk, never buffered whole).
function _M.streaming(st)
  return st.stream ~= nil
end

-- Tokens restored and unknown tokens seen in the response so far.
function _M.restore_counts(st)
  local restorer = st.restorer
  if not restorer then
    return 0, 0
  end
  return restorer.restored, restorer.unknown
end

-- The request's key=value log line and its level: "err" when masking, decoding or restoring
-- failed,
-- "warn" when that failure was let through by fail_mode "open", else "notice".
function _M.log_line(st, status)
  local restored, unknown = _M.restore_counts(st)
  local level = "notice"
  if st.store_error or st.restore_error or st.response_encoded then
    level = st.fail_open and "warn" or "err"
  end
  -- One concatenation: a single string is built, no table per request.
  return "aws_masker status=" .. (st.status or status or "-")
    .. " masked=" .. st.masked .. " distinct=" .. st.distinct .. " types=" .. (st.types or "-")
    .. " restored=" .. restored .. " unknown_tokens=" .. unknown
    .. " bytes_in=" .. (st.bytes_in or 0)
    .. " scan_ms=" .. format("%.2f", st.scan_ms or 0)
    .. " store_ms=" .. format("%.2f", st.store_ms or 0)
    .. " mask_ms=" .. format("%.2f", st.mask_ms or 0)
    .. (st.thinking_checked and st.thinking_checked > 0
      and (" thinking_checked=" .. st.thinking_checked) or "")
    .. (st.thinking and (" thinking_blocks=" .. st.thinking.blocks) or "")
    .. (st.stream and " stream=1" or "")
    .. (st.fail_open and " fail_open=1" or "")
    .. (st.body_file and " body_file=1" or "")
    .. (st.response_encoded and " response_encoded=1" or "")
    .. (st.response_decoded and (" decoded=" .. st.response_decoded) or "")
    .. (st.error and (' error="' .. st.error .. '"') or "")
    .. (st.store_error and (' store_error="' .. st.store_error .. '"') or "")
    .. (st.restore_error and (' restore_error="' .. st.restore_error .. '"') or ""), level
end

return _M
