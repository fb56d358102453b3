#!/usr/bin/env bash
# The main job on a fresh Debian host, as root: set up the controller, deploy the whole
# gateway to this host with the local inventory (stand-in upstream), then send a request
# full of AWS identifiers through it with the anthropic SDK and show both sides.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

scripts/bootstrap.sh
.venv/bin/ansible-playbook playbooks/deploy.yml -i inventories/local "$@"
.venv/bin/python scripts/demo.py
