#!/usr/bin/env bash
# Prepares a fresh Debian host (as root) to run the collection from this clone:
# distribution packages the tests need, and a Python virtual environment in .venv.
#   scripts/bootstrap.sh           controller packages only (what the deploy needs)
#   scripts/bootstrap.sh --test    also the test tools (pytest, linters, busted, luacheck)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log() { printf 'bootstrap: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (it installs Debian packages)" >&2
  exit 2
fi

apt_packages=(python3 python3-venv python3-pip ca-certificates curl)
if [ "$want_test" -eq 1 ]; then
  # The Lua specs run inside a real nginx with its Lua module; the gateway tests start a
  # private redis-server; bench/throughput.py drives load with wrk; the kong engine's tests
  # validate the rendered kong.yml offline with decK and compile every Lua file with luac
  # (lua5.2) and luajit. Roles install the same packages (less wrk, deck and lua5.2) on deploy
  # targets.
  apt_packages+=(nginx libnginx-mod-http-lua libnginx-mod-http-ndk lua-cjson lua-nginx-redis
    lua-zlib redis-server supervisor lua-busted lua-check luajit2 git wrk deck lua5.2)
fi

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Keep packages from starting their default daemons (nginx on :80, redis on :6379): the
  # roles run our own instances under a supervisor, and a stray redis would hold our port.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    own_policy=1
  fi
  trap '[ "$own_policy" -eq 1 ] && rm -f "$policy"' EXIT
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x "$repo/.venv/bin/python" ]; then
  log "creating $repo/.venv with $($python --version 2>&1)"
  "$python" -m venv "$repo/.venv"
fi
reqs="$repo/requirements.txt"
[ "$want_test" -eq 1 ] && reqs="$repo/requirements-test.txt"
stamp="$repo/.venv/.installed-$(basename "$reqs" .txt)"
if [ ! -f "$stamp" ] || [ "$reqs" -nt "$stamp" ] || [ "$repo/requirements.txt" -nt "$stamp" ]; then
  log "installing Python packages from $(basename "$reqs")"
  "$repo/.venv/bin/pip" install -q --upgrade pip
  "$repo/.venv/bin/pip" install -q -r "$reqs"
  touch "$stamp"
fi
log "ready: $repo/.venv"
