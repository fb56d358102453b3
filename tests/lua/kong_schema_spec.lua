-- The aws-masker plugin schema (kong.plugins.aws-masker.schema): its fields, defaults and
-- validators.
--
-- Kong is not installed here, so Kong's schema library never saw this file. What is faked:
--   * kong.db.schema.typedefs: only the typedefs the schema uses (host, port, timeout,
--     no_consumer, protocols_http), with the type and range Kong 3.x gives them and Kong's
--     merge rule for typedef calls (the call's keys win, the typedef fills the rest); Kong's
--     host typedef also runs a host-name validator, which is left out;
--   * the validation: `check` below applies only the validators this schema declares (type,
--     between, one_of, len_min, match), the way Kong's documentation describes them.
-- What these specs show is that the declarations are the intended ones, not that Kong
-- accepts them.

local TYPEDEFS = "kong.db.schema.typedefs"
local SCHEMA = "kong.plugins.aws-masker.schema"

local function define(fields)
  return setmetatable(fields, {
    __call = function(typedef, arg)
      arg = arg or {}
      for key, value in pairs(typedef) do
        if arg[key] == nil then
          arg[key] = value
        end
      end
      return arg
    end,
  })
end

local FAKE_TYPEDEFS = {
  host = define({ type = "string" }),
  port = define({ type = "integer", between = { 0, 65535 } }),
  timeout = define({ type = "integer", between = { 0, 2 ^ 31 - 2 } }),
  no_consumer = define({ type = "foreign", reference = "consumers", eq = ngx.null }),
  protocols_http = define({ type = "set", required = true, default = { "http", "https" },
    elements = { type = "string", one_of = { "http", "https" } } }),
}

-- name -> definition, for a list of { name = definition } entries.
local function by_name(fields)
  local out = {}
  for _, entry in ipairs(fields) do
    local name, definition = next(entry)
    out[name] = definition
  end
  return out
end

-- Applies the validators a field declares to a value; returns true or nil, reason.
local function check(field, value)
  if field.type == "integer" then
    if type(value) ~= "number" or value % 1 ~= 0 then
      return nil, "expected an integer"
    end
  elseif field.type == "string" then
    if type(value) ~= "string" then
      return nil, "expected a string"
    end
  end
  if field.between and (value < field.between[1] or value > field.between[2]) then
    return nil, "not between"
  end
  if field.len_min and #value < field.len_min then
    return nil, "too short"
  end
  if field.match and not value:match(field.match) then
    return nil, "does not match"
  end
  if field.one_of then
    for _, allowed in ipairs(field.one_of) do
      if allowed == value then
        return true
      end
    end
    return nil, "not one of"
  end
  return true
end

describe("kong.plugins.aws-masker.schema", function()
  local schema, top, config, redis

  setup(function()
    package.loaded[TYPEDEFS] = FAKE_TYPEDEFS
    package.loaded[SCHEMA] = nil
    schema = require(SCHEMA)
    top = by_name(schema.fields)
    config = by_name(top.config.fields)
    redis = by_name(config.redis.fields)
  end)

  teardown(function()
    package.loaded[TYPEDEFS] = nil
    package.loaded[SCHEMA] = nil
  end)

  it("is the aws-masker plugin, for HTTP, never bound to a consumer", function()
    assert.equal("aws-masker", schema.name)
    assert.equal(FAKE_TYPEDEFS.no_consumer, top.consumer)
    assert.equal(FAKE_TYPEDEFS.protocols_http, top.protocols)
    assert.equal("record", top.config.type)
  end)

  it("has exactly the configuration keys of the nginx_lua engine's masker.json", function()
    local names = {}
    for name in pairs(config) do
      names[#names + 1] = name
    end
    table.sort(names)
    assert.same({ "catalog_path", "fail_mode", "mapping_ttl_seconds", "max_body_bytes",
      "redis", "scope_by", "scope_header", "scope_secret" }, names)

    names = {}
    for name in pairs(redis) do
      names[#names + 1] = name
    end
    table.sort(names)
    assert.same({ "connect_timeout_ms", "database", "host", "keepalive_ms", "password",
      "pool_size", "port", "read_timeout_ms", "send_timeout_ms" }, names)
  end)

  it("defaults to the gateway role's defaults", function()
    assert.equal("127.0.0.1", redis.host.default)
    assert.equal(6379, redis.port.default)
    assert.equal(0, redis.database.default)
    assert.equal(1000, redis.connect_timeout_ms.default)
    assert.equal(1000, redis.send_timeout_ms.default)
    assert.equal(1000, redis.read_timeout_ms.default)
    assert.equal(32, redis.pool_size.default)
    assert.equal(60000, redis.keepalive_ms.default)
    assert.is_nil(redis.password.default)
    assert.equal(86400, config.mapping_ttl_seconds.default)
    assert.equal(33554432, config.max_body_bytes.default)
    assert.equal("closed", config.fail_mode.default)
    assert.equal("credential", config.scope_by.default)
    assert.is_nil(config.scope_header.default)
    assert.is_not_true(config.scope_header.required)
    assert.equal("/usr/local/share/lua/5.1/kong/plugins/aws-masker/aws_patterns.json",
      config.catalog_path.default)
    assert.is_nil(config.scope_secret.default) -- no usable default exists: it must be set
    assert.is_true(config.scope_secret.required)
  end)

  it("keeps secrets referenceable and encrypted", function()
    for _, field in ipairs({ redis.password, config.scope_secret }) do
      assert.equal("string", field.type)
      assert.is_true(field.referenceable)
      assert.is_true(field.encrypted)
    end
  end)

  it("takes the typedefs' types and overrides their ranges where zero is no value", function()
    assert.equal("string", redis.host.type)
    assert.equal("integer", redis.port.type)
    assert.same({ 1, 65535 }, redis.port.between)
    for _, name in ipairs({ "connect_timeout_ms", "send_timeout_ms", "read_timeout_ms" }) do
      assert.equal("integer", redis[name].type)
      assert.equal(1, redis[name].between[1], name)
    end
  end)

  it("accepts every default under its own validators", function()
    for _, fields in ipairs({ config, redis }) do
      for name, field in pairs(fields) do
        if field.default ~= nil then
          assert.is_true(check(field, field.default), name)
        end
      end
    end
  end)

  it("rejects values outside the allowed ranges and sets", function()
    local rejected = {
      { redis.port, 0 }, { redis.port, 65536 }, { redis.port, 63.5 },
      { redis.database, -1 }, { redis.pool_size, 0 }, { redis.keepalive_ms, 0 },
      { redis.connect_timeout_ms, 0 }, { redis.read_timeout_ms, 2 ^ 31 },
      { config.mapping_ttl_seconds, 0 }, { config.max_body_bytes, 0 },
      { config.fail_mode, "half-open" }, { config.fail_mode, "CLOSED" },
      { config.scope_secret, "short secret" },
      { config.catalog_path, "relative/aws_patterns.json" },
      { config.scope_by, "consumer" }, { config.scope_by, "HEADER" },
      { config.scope_header, "" }, { config.scope_header, "x_team" },
      { config.scope_header, "x-team: a" },
    }
    for i, case in ipairs(rejected) do
      assert.is_nil(check(case[1], case[2]), "case " .. i)
    end

    assert.is_true(check(config.fail_mode, "open"))
    for _, scope_by in ipairs({ "credential", "header", "global" }) do
      assert.is_true(check(config.scope_by, scope_by))
    end
    assert.is_true(check(config.scope_header, "X-Consumer-Username"))
    assert.is_true(check(config.scope_secret, string.rep("s", 16)))
    assert.is_true(check(config.catalog_path, "/etc/kong/aws_patterns.json"))
  end)

  it("requires scope_header when scope_by is header, and only then", function()
    assert.same({ { conditional = {
      if_field = "config.scope_by", if_match = { eq = "header" },
      then_field = "config.scope_header", then_match = { required = true },
    } } }, schema.entity_checks)
  end)
end)
