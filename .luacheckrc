-- luacheck configuration: the Lua core runs under OpenResty's ngx_lua.
std = "ngx_lua"
max_line_length = 100
codes = true

files["tests/lua"] = {
  std = "+busted",
  read_globals = { "AWS_MASKER_TEST_CATALOG", "AWS_MASKER_TEST_DIR" },
}
