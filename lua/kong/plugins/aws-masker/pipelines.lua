-- One masking pipeline per plugin configuration, built on first use and kept per worker.
--
-- Kong hands every phase the same configuration table until the configuration changes, so
-- the table is the key (weak: a replaced configuration's pipeline goes with it). Catalogs are
-- compiled once per path and worker. Building opens no Redis connection, so it is allowed in
-- any phase; the store connects when a request masks.

local pipeline = require "aws_masker.pipeline"
local catalog_path = require "kong.plugins.aws-masker.catalog_path"

local io_open = io.open
local setmetatable = setmetatable

local _M = {}

local catalogs = {}
local by_config = setmetatable({}, { __mode = "k" })

-- The compiled catalog of a path, compiled on first use.
function _M.catalog(path)
  local catalog = catalogs[path]
  if catalog then
    return catalog
  end
  local err
  catalog, err = pipeline.load_catalog(path)
  if not catalog then
    return nil, err
  end
  catalogs[path] = catalog
  return catalog
end

-- Compiles the catalog at the default path, when there is one, so the first request does not
-- pay for it. Returns true, or nil and why the file there does not load.
function _M.warm()
  local f = io_open(catalog_path.DEFAULT, "rb")
  if not f then
    return true -- installed elsewhere: the configured path is compiled on first use
  end
  f:close()
  local catalog, err = _M.catalog(catalog_path.DEFAULT)
  if not catalog then
    return nil, err
  end
  return true
end

-- The pipeline of a plugin configuration (the schema's `config` record).
function _M.get(conf)
  local p = by_config[conf]
  if p then
    return p
  end

  local catalog, err = _M.catalog(conf.catalog_path)
  if not catalog then
    return nil, err
  end
  local store
  store, err = pipeline.new_store(conf)
  if not store then
    return nil, err
  end
  p, err = pipeline.new({ catalog = catalog, store = store, scope_secret = conf.scope_secret,
    scope_by = conf.scope_by, scope_header = conf.scope_header,
    max_body_bytes = conf.max_body_bytes, fail_mode = conf.fail_mode })
  if not p then
    return nil, err
  end
  by_config[conf] = p
  return p
end

-- Uses a pipeline built elsewhere for a configuration (specs build one over a stand-in store).
function _M.set(conf, p)
  by_config[conf] = p
end

return _M
