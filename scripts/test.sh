#!/usr/bin/env bash
# Sets up a fresh Debian host (as root) and runs every test of the collection:
# linters, Python and Lua unit tests, the end-to-end tests and the Molecule scenarios, which
# deploy the stack to this host with the local inventory (real Redis, real nginx with Lua).
# The Molecule scenarios run in order on the one deployment: default deploys it, rollback and
# mappings work on it and leave it as deploy.yml makes it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

scripts/bootstrap.sh --test
export PATH="$repo/.venv/bin:$PATH"

step() { printf '\n=== %s\n' "$*"; }

step "lint: ruff, yamllint, luacheck, ansible-lint"
ruff check .
yamllint -s .
luacheck lua tests/lua
ansible-lint --profile production roles playbooks examples extensions
antsibull-changelog lint

step "ansible-test sanity (ignores with reasons: tests/sanity/ignore-*.txt)"
tests/sanity/run.sh

step "Lua specs inside nginx (real ngx.re / PCRE)"
tests/lua/run.sh

step "Molecule default: deploy to this host, idempotence, testinfra checks (tests/infra)"
(cd extensions && molecule test -s default)

step "Molecule rollback: deploy a change, roll back, the first deploy's bytes, verify"
(cd extensions && molecule test -s rollback)

step "Molecule mappings: seed, back up, flush, restore, the data checked"
(cd extensions && molecule test -s mappings)

step "pytest: unit, gateway-in-nginx and end-to-end"
# Exit code 5 (no tests collected) is a failure here like any other non-zero code.
pytest -ra
