-- luacheck configuration: the Lua core runs under OpenResty's ngx_lua.
std = "ngx_lua"
max_line_length = 100
codes = true

-- The Kong plugin runs inside Kong, which provides the PDK as the global `kong`; phase
-- handlers take `self` (the handler table) whether they use it or not.
files["lua/kong"] = {
  self = false,
  read_globals = {
    kong = { other_fields = true, fields = { ctx = { read_only = false, other_fields = true } } },
  },
}

files["tests/lua"] = {
  std = "+busted",
  read_globals = { "AWS_MASKER_TEST_CATALOG", "AWS_MASKER_TEST_DIR" },
  globals = { "kong" }, -- the Kong adapter's specs install a stand-in PDK there
}
