"""Runs a module of the collection the way an operator does: the venv's ``ansible`` ad hoc
command from the repository root, which finds the collection through collections/ and
ansible.cfg. Returns the parsed result, so tests read ``changed`` and the return values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ansible_bin(name):
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def run_module(name, args, check=False):
    """(status, result, whole output) of one module run on localhost."""
    command = [ansible_bin("ansible"), "localhost", "-m", f"aws_masking.gateway.{name}",
               "-a", json.dumps(args), "-o"]
    command += ["--check"] if check else []
    env = dict(os.environ, ANSIBLE_DEPRECATION_WARNINGS="false",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    output = done.stdout + done.stderr
    head = done.stdout.split("=>", 1)
    status = head[0].split("|")[-1].strip() if len(head) == 2 else "UNPARSED"
    result = json.loads(head[1]) if len(head) == 2 else None
    return status, result, output
