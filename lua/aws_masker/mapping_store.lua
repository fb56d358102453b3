-- The mapping store: Redis keeps token <-> original per scope, shared by every gateway node.
--
-- One script call per request assigns or refreshes every identifier of the request atomically,
-- so one original never gets two tokens and one token never names two originals, whatever
-- runs concurrently. Keys and rules: docs/ARCHITECTURE.md, "Mapping store".

local ok_redis, redis = pcall(require, "resty.redis")
if not ok_redis then
  redis = require "nginx.redis" -- Debian's name for lua-resty-redis
end

local HAS_SET_TIMEOUTS = rawget(redis, "set_timeouts") ~= nil

local sha1_bin = ngx.sha1_bin
local byte = string.byte
local find = string.find
local format = string.format
local type = type
local unpack = unpack
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

-- KEYS[1]: the scope's sequence key for the first code (routes the call to the scope's slot;
-- every key of one call shares the scope hash tag). ARGV: key prefix, TTL, then code, original
-- pairs. Returns the tokens in order, or an error naming the code that ran out of numbers.
local ASSIGN_SCRIPT = [[
local prefix, ttl = ARGV[1], ARGV[2]
local tokens = {}
for i = 3, #ARGV, 2 do
  local code, original = ARGV[i], ARGV[i + 1]
  local okey = prefix .. 'o:' .. redis.sha1hex(code .. '\0' .. original)
  local seq = prefix .. 'seq:' .. code
  local token = redis.call('GET', okey)
  if token and redis.call('GET', prefix .. 't:' .. token) ~= original then
    token = false
  end
  if token then
    redis.call('EXPIRE', okey, ttl)
    redis.call('EXPIRE', prefix .. 't:' .. token, ttl)
  else
    while not token do
      local n = redis.call('INCR', seq)
      if n > 999999 then
        return redis.error_reply('token sequence exhausted for ' .. code)
      end
      local candidate = 'AWS_' .. code .. '_' .. string.format('%06d', n)
      if redis.call('SET', prefix .. 't:' .. candidate, original, 'NX', 'EX', ttl) then
        token = candidate
      end
    end
    redis.call('SET', okey, token, 'EX', ttl)
  end
  redis.call('EXPIRE', seq, ttl)
  tokens[#tokens + 1] = token
end
return tokens
]]

local ASSIGN_SHA
do
  local digest = sha1_bin(ASSIGN_SCRIPT)
  ASSIGN_SHA = format(("%02x"):rep(20), byte(digest, 1, 20))
end

-- opts: host, port, password, database, connect_timeout_ms, send_timeout_ms, read_timeout_ms,
-- pool_size, keepalive_ms, mapping_ttl_seconds.
function _M.new(opts)
  if type(opts) ~= "table" or type(opts.host) ~= "string" then
    return nil, "mapping store needs a redis host"
  end
  local ttl = opts.mapping_ttl_seconds or 604800
  if type(ttl) ~= "number" or ttl < 1 then
    return nil, "mapping_ttl_seconds must be a positive number"
  end
  return setmetatable({
    host = opts.host,
    port = opts.port or 6379,
    password = opts.password ~= "" and opts.password or nil,
    database = opts.database or 0,
    connect_timeout = opts.connect_timeout_ms or 1000,
    send_timeout = opts.send_timeout_ms or 1000,
    read_timeout = opts.read_timeout_ms or 2000,
    pool_size = opts.pool_size or 64,
    keepalive = opts.keepalive_ms or 60000,
    ttl = ttl,
    pool = "aws_masker:" .. opts.host .. ":" .. (opts.port or 6379) .. ":"
      .. (opts.database or 0),
  }, mt)
end

local function connect(self)
  local red, err = redis:new()
  if not red then
    return nil, "redis client: " .. err
  end
  -- Unknown methods of the client are sent to Redis as commands: test for the real one.
  -- Older clients (Debian's 0.27) have one timeout: connect's first, then the slower of the two.
  if HAS_SET_TIMEOUTS then
    red:set_timeouts(self.connect_timeout, self.send_timeout, self.read_timeout)
  else
    red:set_timeout(self.connect_timeout)
  end

  local ok
  ok, err = red:connect(self.host, self.port, { pool = self.pool, pool_size = self.pool_size })
  if not ok then
    return nil, "redis connect: " .. err
  end
  if not HAS_SET_TIMEOUTS then
    red:set_timeout(self.read_timeout > self.send_timeout and self.read_timeout
      or self.send_timeout)
  end

  -- A pooled connection is already authenticated and on the right database.
  local reused = red:get_reused_times()
  if reused == 0 then
    if self.password then
      ok, err = red:auth(self.password)
      if not ok then
        red:close()
        return nil, "redis auth: " .. err
      end
    end
    if self.database ~= 0 then
      ok, err = red:select(self.database)
      if not ok then
        red:close()
        return nil, "redis select: " .. err
      end
    end
  end
  return red
end

-- Findings per script call: keeps the argument list well inside what unpack() can take. Each
-- call is atomic on its own, which is all the one-to-one rule needs.
local BATCH = 1000

local function assign_batch(red, args, first, last, findings, tokens)
  local n = 6 -- after sha, numkeys, key, prefix, ttl
  for i = first, last do
    local f = findings[i]
    args[n], args[n + 1] = f.code, f.value
    n = n + 2
  end
  for i = n, #args do
    args[i] = nil
  end

  args[1] = ASSIGN_SHA
  local reply, err = red:evalsha(unpack(args, 1, n - 1))
  if not reply and err and find(err, "NOSCRIPT", 1, true) then
    args[1] = ASSIGN_SCRIPT
    reply, err = red:eval(unpack(args, 1, n - 1))
  end
  if not reply then
    return nil, "redis assign: " .. (err or "no reply")
  end
  if type(reply) ~= "table" or #reply ~= last - first + 1 then
    return nil, "redis assign: unexpected reply"
  end
  for i = 1, #reply do
    tokens[first + i - 1] = reply[i]
  end
  return true
end

-- Assigns (or refreshes) the token of every finding {code =, value =} under a scope.
-- Returns the list of tokens, in the order of findings, or nil, err.
function _M:assign(scope, findings)
  local count = #findings
  local tokens = {}
  if count == 0 then
    return tokens
  end

  local red, err = connect(self)
  if not red then
    return nil, err
  end

  local prefix = "aws_masker:{" .. scope .. "}:"
  local args = { ASSIGN_SHA, 1, prefix .. "seq:" .. findings[1].code, prefix, self.ttl }
  for first = 1, count, BATCH do
    local last = first + BATCH - 1
    if last > count then
      last = count
    end
    local ok
    ok, err = assign_batch(red, args, first, last, findings, tokens)
    if not ok then
      red:close()
      return nil, err
    end
  end

  -- A connection the pool refuses is closed by the client; the tokens are valid either way.
  red:set_keepalive(self.keepalive, self.pool_size)
  return tokens
end

-- Checks that the store answers (connect, authenticate, PING) within the timeouts.
-- Returns true, or nil and the failure.
function _M:ping()
  local red, err = connect(self)
  if not red then
    return nil, err
  end
  local pong
  pong, err = red:ping()
  if not pong then
    red:close()
    return nil, "redis ping: " .. err
  end
  red:set_keepalive(self.keepalive, self.pool_size)
  return true
end

return _M
