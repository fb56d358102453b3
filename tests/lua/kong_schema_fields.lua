-- Prints the aws-masker plugin's `config` record as JSON, for tests/unit/test_kong_engine.py:
-- every field with its type, default, required flag and validators (between, one_of,
-- len_min, match), records with their own fields. Run with LuaJIT from the repository root:
--   luajit tests/lua/kong_schema_fields.lua
-- Kong is not installed here: kong.db.schema.typedefs is replaced by tables holding the type
-- and range Kong 3.x gives the typedefs the schema uses (host, port, timeout, no_consumer,
-- protocols_http), merged with the call's own keys as Kong merges them.

package.path = "lua/?.lua;" .. package.path

local cjson = require "cjson"

local function typedef(base)
  return setmetatable(base, {
    __call = function(self, arg)
      local out = {}
      for key, value in pairs(self) do
        out[key] = value
      end
      for key, value in pairs(arg or {}) do
        out[key] = value
      end
      return out
    end,
  })
end

package.preload["kong.db.schema.typedefs"] = function()
  return {
    host = typedef({ type = "string" }),
    port = typedef({ type = "integer", between = { 0, 65535 } }),
    timeout = typedef({ type = "integer", between = { 0, 2 ^ 31 - 2 } }),
    no_consumer = typedef({ type = "foreign", reference = "consumers" }),
    protocols_http = typedef({ type = "set", elements = { type = "string" } }),
  }
end

local KEEP = { "type", "default", "required", "between", "one_of", "len_min", "match" }

local function describe(fields)
  local out = {}
  for _, entry in ipairs(fields) do
    local name, definition = next(entry)
    local field = {}
    for _, key in ipairs(KEEP) do
      field[key] = definition[key]
    end
    if definition.type == "record" then
      field.fields = describe(definition.fields)
    end
    out[name] = field
  end
  return out
end

local schema = require "kong.plugins.aws-masker.schema"
for _, entry in ipairs(schema.fields) do
  local name, definition = next(entry)
  if name == "config" then
    io.write(cjson.encode({ name = schema.name, config = describe(definition.fields) }), "\n")
    return
  end
end
error("the schema has no config record")
