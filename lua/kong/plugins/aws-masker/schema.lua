-- Configuration of the aws-masker plugin. Keys and defaults match the nginx_lua engine's
-- masker.json (roles/gateway), so one set of role variables drives both engines.

local typedefs = require "kong.db.schema.typedefs"
local catalog_path = require "kong.plugins.aws-masker.catalog_path"

-- Largest value of a signed 32-bit field, the bound of Kong's own timeouts.
local INT32_MAX = 2147483646

local function timeout_ms(default)
  return typedefs.timeout {
    required = true,
    default = default,
    between = { 1, INT32_MAX },
    description = "Redis client timeout in milliseconds.",
  }
end

return {
  name = "aws-masker",
  fields = {
    -- Masking must not depend on who calls: never scoped to a consumer.
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
      type = "record",
      fields = {
        { redis = {
          type = "record",
          required = true,
          fields = {
            { host = typedefs.host {
              required = true,
              default = "127.0.0.1",
              description = "Redis host holding the token mappings.",
            } },
            { port = typedefs.port {
              required = true,
              default = 6379,
              between = { 1, 65535 },
              description = "Redis port.",
            } },
            { password = {
              type = "string",
              required = false,
              encrypted = true, -- Kong Enterprise keyring; Kong CE stores it as given
              referenceable = true,
              description = "Redis password (AUTH); a vault reference keeps it out of kong.yml.",
            } },
            { database = {
              type = "integer",
              required = true,
              default = 0,
              between = { 0, INT32_MAX },
              description = "Redis database number.",
            } },
            { connect_timeout_ms = timeout_ms(1000) },
            { send_timeout_ms = timeout_ms(1000) },
            { read_timeout_ms = timeout_ms(1000) },
            { pool_size = {
              type = "integer",
              required = true,
              default = 32,
              between = { 1, 10000 },
              description = "Idle Redis connections kept per worker.",
            } },
            { keepalive_ms = {
              type = "integer",
              required = true,
              default = 60000,
              between = { 1, INT32_MAX },
              description = "How long an idle Redis connection is kept, in milliseconds.",
            } },
          },
        } },
        { mapping_ttl_seconds = {
          type = "integer",
          required = true,
          default = 86400,
          between = { 1, INT32_MAX },
          description = "Seconds a mapping lives after its last use (the expiry slides).",
        } },
        { scope_secret = {
          type = "string",
          required = true,
          len_min = 16,
          encrypted = true,
          referenceable = true,
          description = "HMAC key turning a client credential into its token scope; "
            .. "changing it orphans every mapping.",
        } },
        { scope_by = {
          type = "string",
          required = true,
          default = "credential",
          one_of = { "credential", "header", "global" },
          description = "What the token scope is an HMAC of: credential (x-api-key, else "
            .. "Authorization), header (the value of scope_header; a request without it gets "
            .. "400), global (one scope: every client shares token numbering and Redis keys).",
        } },
        { scope_header = {
          type = "string",
          required = false,
          match = "^[A-Za-z0-9-]+$",
          description = "The request header whose value is the scope when scope_by is header "
            .. "(a team or consumer header set by an authenticating plugin or proxy).",
        } },
        { max_body_bytes = {
          type = "integer",
          required = true,
          default = 33554432,
          between = { 1, INT32_MAX },
          description = "Largest request body masked, in bytes; larger ones get 413.",
        } },
        { fail_mode = {
          type = "string",
          required = true,
          default = "closed",
          one_of = { "closed", "open" },
          description = "closed: nothing unmasked is forwarded when masking fails; "
            .. "open: the body is forwarded unmasked and logged with fail_open=1.",
        } },
        { catalog_path = {
          type = "string",
          required = true,
          default = catalog_path.DEFAULT,
          match = "^/",
          description = "Absolute path of the pattern catalog as JSON.",
        } },
      },
    } },
  },
  entity_checks = {
    -- A header scope without a header would put every request in one scope unannounced.
    { conditional = {
      if_field = "config.scope_by", if_match = { eq = "header" },
      then_field = "config.scope_header", then_match = { required = true },
    } },
  },
}
