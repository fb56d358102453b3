#!/usr/bin/env bash
# Runs `ansible-test sanity` on the collection as it is in this working tree.
# ansible-test wants the collection under ansible_collections/<namespace>/<name> and resolves
# symlinks, so the tracked and untracked-but-not-ignored files are copied into a scratch tree.
# Sanity virtual environments bootstrap pip with tests/sanity/bootstrap_pip.py, since the
# script ansible-test would download lives on a host outside the reachable package indexes.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/aws_masking/gateway"
mkdir -p "$dest"

cd "$repo"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' path; do
      if [ -e "$path" ] || [ -L "$path" ]; then printf '%s\0' "$path"; fi
    done \
  | xargs -0 cp --parents -P -t "$dest"

# The pip version ansible-test pins for its virtual environments names the cached script.
pip_version=$(python - <<'PY'
import pathlib, re
import ansible_test
source = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
found = re.search(r"pip='([0-9.]+)'", source.read_text())
print(found.group(1) if found else "")
PY
)
if [ -n "$pip_version" ]; then
  cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
  mkdir -p "$(dirname "$cache")"
  cp "$repo/tests/sanity/bootstrap_pip.py" "$cache"
fi

cd "$dest"
git init -q && git add -A
ansible-test sanity --local --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$@"
