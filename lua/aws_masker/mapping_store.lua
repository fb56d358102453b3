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
local tostring = tostring
local type = type
local unpack = unpack
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

-- KEYS[1]: a key of the scope (routes the call to the scope's slot; every key of one call
-- shares the scope hash tag). ARGV: key prefix, TTL, the number n of thinking block digests,
-- those n digests, then code, original pairs. Returns the tokens in order, then 1 or 0 for
-- each digest: known in the scope (its TTL refreshed) or not; or an error naming the code
-- that ran out of numbers.
local ASSIGN_SCRIPT = [[
local prefix, ttl, nth = ARGV[1], ARGV[2], tonumber(ARGV[3])
local tokens, codes = {}, {}
local function refresh_sequences()
  for code in pairs(codes) do
    redis.call('EXPIRE', prefix .. 'seq:' .. code, ttl)
  end
end
for i = 4 + nth, #ARGV, 2 do
  local code, original = ARGV[i], ARGV[i + 1]
  local okey = prefix .. 'o:' .. redis.sha1hex(code .. '\0' .. original)
  codes[code] = true
  local token = redis.call('GET', okey)
  if token and redis.call('GET', prefix .. 't:' .. token) ~= original then
    token = false
  end
  if token then
    redis.call('EXPIRE', okey, ttl)
    redis.call('EXPIRE', prefix .. 't:' .. token, ttl)
  else
    while not token do
      local n = redis.call('INCR', prefix .. 'seq:' .. code)
      if n > 999999 then
        refresh_sequences()
        return redis.error_reply('token sequence exhausted for ' .. code)
      end
      local candidate = 'AWS_' .. code .. '_' .. string.format('%06d', n)
      if redis.call('SET', prefix .. 't:' .. candidate, original, 'NX', 'EX', ttl) then
        token = candidate
      end
    end
    redis.call('SET', okey, token, 'EX', ttl)
  end
  tokens[#tokens + 1] = token
end
refresh_sequences() -- once per code, not once per identifier
for i = 4, 3 + nth do
  tokens[#tokens + 1] = redis.call('EXPIRE', prefix .. 'th:' .. ARGV[i], ttl)
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

-- One script call: findings[first..last] and the digests (only in the first call). Fills
-- tokens and known (digest -> true when the scope knows it).
local function assign_batch(red, args, first, last, findings, tokens, digests, known)
  local nth = digests and #digests or 0
  args[6] = nth
  local n = 7 -- after sha, numkeys, key, prefix, ttl, nth
  for i = 1, nth do
    args[n] = digests[i]
    n = n + 1
  end
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
  local count = last - first + 1
  if type(reply) ~= "table" or #reply ~= count + nth then
    return nil, "redis assign: unexpected reply"
  end
  for i = 1, count do
    tokens[first + i - 1] = reply[i]
  end
  for i = 1, nth do
    known[digests[i]] = reply[count + i] == 1
  end
  return true
end

-- Assigns (or refreshes) the token of every finding {code =, value =} under a scope, and
-- looks up digests (a list, may be nil) of thinking blocks the gateway delivered to the scope,
-- refreshing those it finds; one script call for both (one per 1000 findings).
-- Returns the list of tokens, in the order of findings, and a table digest -> true for the
-- digests known; or nil, err.
function _M:assign(scope, findings, digests)
  local count = #findings
  local tokens, known = {}, {}
  if digests and not digests[1] then
    digests = nil
  end
  if count == 0 and not digests then
    return tokens, nil, known
  end

  local red, err = connect(self)
  if not red then
    return nil, err
  end

  local prefix = "aws_masker:{" .. scope .. "}:"
  local route = count > 0 and ("seq:" .. findings[1].code) or ("th:" .. digests[1])
  local args = { ASSIGN_SHA, 1, prefix .. route, prefix, self.ttl }
  local first = 1
  repeat
    local last = first + BATCH - 1
    if last > count then
      last = count
    end
    local ok
    ok, err = assign_batch(red, args, first, last, findings, tokens, digests, known)
    if not ok then
      red:close()
      return nil, err
    end
    digests = nil
    first = last + 1
  until first > count

  -- A connection the pool refuses is closed by the client; the tokens are valid either way.
  red:set_keepalive(self.keepalive, self.pool_size)
  return tokens, nil, known
end

-- Remembers the digests of thinking blocks delivered to a scope, for the mapping TTL: one
-- pipelined round trip. Returns true, or nil, err.
function _M:remember_thinking(scope, digests)
  local red, err = connect(self)
  if not red then
    return nil, err
  end
  local prefix = "aws_masker:{" .. scope .. "}:th:"
  red:init_pipeline(#digests)
  for i = 1, #digests do
    red:set(prefix .. digests[i], "1", "EX", self.ttl)
  end
  local replies
  replies, err = red:commit_pipeline()
  if not replies then
    red:close()
    return nil, "redis record: " .. err
  end
  for i = 1, #replies do
    local reply = replies[i]
    if type(reply) == "table" and reply[1] == false then
      red:close()
      return nil, "redis record: " .. tostring(reply[2])
    end
  end
  red:set_keepalive(self.keepalive, self.pool_size)
  return true
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
