#!/bin/sh
# Runs the busted specs of tests/lua inside nginx's init phase, so ngx.re is the real PCRE of
# the Lua module (as in production). Exit code: busted's. Usage: tests/lua/run.sh [spec ...]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
modules=${NGINX_MODULES:-/usr/lib/nginx/modules}
nginx=${NGINX:-nginx}

prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT INT TERM
mkdir -p "$prefix/logs"

if [ "$#" -eq 0 ]; then
  set -- "$here"
fi
specs=""
for spec in "$@"; do
  specs="$specs\"$spec\", "
done

# The catalog as JSON, for specs that check its examples (the Lua side reads JSON only).
catalog_json="$prefix/aws_patterns.json"
python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)' \
  "$root/catalog/aws_patterns.yml" > "$catalog_json"

cat > "$prefix/nginx.conf" <<CONF
load_module $modules/ndk_http_module.so;
load_module $modules/ngx_http_lua_module.so;
pid $prefix/nginx.pid;
error_log stderr notice;
events {}
http {
  lua_package_path "$root/lua/?.lua;$here/?.lua;;";
  init_by_lua_block {
    _G.AWS_MASKER_TEST_CATALOG = "$catalog_json"
    _G.AWS_MASKER_TEST_DIR = "$here"
    _G.arg = { [0] = "busted", $specs "-o", "utfTerminal", "--pattern", "_spec" }
    require("busted.runner")({ standalone = false })
    os.exit(0, true) -- the runner exits by itself only on failure
  }
}
CONF

exec "$nginx" -p "$prefix" -c "$prefix/nginx.conf" -g 'daemon off; master_process off;'
