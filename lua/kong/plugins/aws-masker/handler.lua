-- The Kong adapter: the masking pipeline (aws_masker.pipeline) wired to Kong's plugin phases.
--
-- Only PDK calls live here: read the request, forward the masked body or answer with an
-- Anthropic-shaped error, clear Content-Length and Content-Encoding of restored responses
-- (a compressed answer is decoded by the pipeline), pass restored chunks on, hand what is sent
-- to aws_masker.thinking (its blocks are recorded from a timer, as response phases cannot reach
-- Redis), write one log line. Streams, and the error that replaces an answer in an encoding the
-- pipeline cannot decode, go chunk by chunk through ngx.arg, as the body_filter phase hands
-- them over; whole bodies go through kong.response.get_raw_body().

local pipeline = require "aws_masker.pipeline"
local request_headers = require "aws_masker.request_headers"
local pipelines = require "kong.plugins.aws-masker.pipelines"
local thinking = require "aws_masker.thinking"

local kong = kong
local ngx = ngx

local JSON_HEADERS = { ["Content-Type"] = "application/json" }

local AwsMaskerHandler = {
  VERSION = "1.0.0",
  -- After authentication and request-transformer (801), so the body masked is the one that
  -- leaves; before plugins that send the request on.
  PRIORITY = 790,
}

local function reject(failure)
  return kong.response.exit(failure.status, failure.body, JSON_HEADERS)
end

function AwsMaskerHandler:init_worker()
  local ok, err = pipelines.warm()
  if not ok then
    kong.log.err("aws_masker catalog_load=failed error=\"", err, "\"")
  end
end

function AwsMaskerHandler:access(conf)
  local st = pipeline.start()
  kong.ctx.plugin.state = st

  local masker, err = pipelines.get(conf)
  if not masker then
    kong.log.err("aws_masker configuration_error=\"", err, "\"")
    local _, failure = pipeline.reject(st, 500, "the masking gateway is not configured")
    return reject(failure)
  end

  -- Asks for an uncompressed answer; one compressed anyway is decoded by the pipeline.
  kong.service.request.clear_header("Accept-Encoding")

  local get_header = kong.request.get_header
  local ok, failure = masker:check_request(st, get_header("Content-Encoding"),
    get_header("Content-Type"), get_header("Content-Length"), get_header("Transfer-Encoding"))
  if not ok then
    return reject(failure)
  end
  ok, failure = masker:check_uri(st, kong.request.get_path_with_query())
  if not ok then
    return reject(failure)
  end

  -- nil when the body was spooled to a file: it is larger than client_body_buffer_size, which
  -- the deployment sets to max_body_bytes.
  local body = kong.request.get_raw_body()
  if not body then
    st.body_file = true
    local _, too_large = pipeline.reject(st, 413,
      "request body exceeds the gateway's in-memory body buffer")
    return reject(too_large)
  end

  local headers, truncated = kong.request.get_headers(request_headers.MAX_HEADERS)
  if truncated then
    local _, too_many = pipeline.reject(st, 400, request_headers.TOO_MANY)
    return reject(too_many)
  end
  local scope_header = masker.scope_header
  body, failure = masker:mask_body(st, body, get_header("x-api-key"), get_header("Authorization"),
    scope_header and get_header(scope_header), headers)
  if not body then
    return reject(failure)
  end
  if st.body_masked then
    kong.service.request.set_raw_body(body)
  end
  if st.headers then
    kong.service.request.set_headers(st.headers)
  end
end

function AwsMaskerHandler:header_filter()
  local st = kong.ctx.plugin.state
  if not st then
    return
  end
  local response = kong.response
  local restore, failure = pipeline.restore_start(st, response.get_header("Content-Type"),
    response.get_header("Content-Encoding"))
  if failure then
    response.set_status(failure.status)
    response.set_header("Content-Type", "application/json")
  end
  if restore or failure then
    response.clear_header("Content-Length")
    response.clear_header("Content-Encoding")
  end
  thinking.response_start(st, response.get_header("Content-Type"),
    response.get_header("Content-Encoding"))
end

local function restore(st)
  if pipeline.streaming(st) or pipeline.replacing(st) then
    pipeline.restore_arg(st, ngx.arg)
    return
  end

  -- An empty body stays empty: set_raw_body would turn "" into a newline.
  local body = kong.response.get_raw_body()
  if body and body ~= "" then
    kong.response.set_raw_body(pipeline.restore_body(st, body))
  end
end

local function thinking_unrecorded(blocks, err)
  kong.log.err("aws_masker event=thinking_record blocks=", blocks, " error=\"", err, "\"")
end

function AwsMaskerHandler:body_filter(conf)
  local st = kong.ctx.plugin.state
  if not st then
    return
  end
  if pipeline.restoring(st) then
    restore(st)
  end

  local digests = thinking.response_chunk(st, ngx.arg[1], ngx.arg[2])
  local masker = digests and pipelines.get(conf)
  if masker then
    thinking.record_later(masker.store, st.scope, digests, thinking_unrecorded)
  end
end

local function write_apart(_, level, line)
  kong.log[level](line)
end

function AwsMaskerHandler:log()
  local st = kong.ctx.plugin.state
  if not st then
    return
  end
  local line, level = pipeline.log_line(st, kong.response.get_status())
  if st.log_apart then
    -- nginx ends every line logged during a request with its request line and Referer.
    ngx.timer.at(0, write_apart, level, line)
  else
    kong.log[level](line)
  end
end

return AwsMaskerHandler
