"""The collection builds into a tarball that installs and exposes its playbooks by FQCN.

Also what an AWX user builds on it: the execution environment's dependencies and the example
project's wrapper playbooks.
"""

import ast
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import install_from_tarball

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args, cwd=None, env=None):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory):
    install_dir = tmp_path_factory.mktemp("collections")
    return install_from_tarball(tmp_path_factory.mktemp("build"), install_dir), install_dir


def test_tarball_leaves_out_development_files(installed_collection):
    tarball, _ = installed_collection
    with tarfile.open(tarball) as archive:
        names = archive.getnames()

    assert "galaxy.yml" not in names  # replaced by MANIFEST.json
    assert "MANIFEST.json" in names
    development = (".venv/", "collections/", ".ci/", ".ansible/")
    assert not [name for name in names if name.startswith(development)]
    for needed in ("lua/aws_masker/pipeline.lua", "catalog/aws_patterns.yml",
                   "playbooks/deploy.yml", "roles/gateway/tasks/main.yml",
                   "lua/kong/plugins/aws-masker/handler.lua"):
        assert needed in names


def test_installed_deploy_playbook_resolves_by_fqcn(installed_collection, tmp_path):
    _, install_dir = installed_collection
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(install_dir),
               ANSIBLE_CONFIG=str(tmp_path / "none.cfg"))
    inventory = install_dir / "ansible_collections" / "aws_masking" / "gateway" / "inventories"

    result = run(str(BIN / "ansible-playbook"), "aws_masking.gateway.deploy", "-i",
                 str(inventory / "local"), "--syntax-check", cwd=tmp_path, env=env)

    installed = install_dir / "ansible_collections" / "aws_masking" / "gateway"
    assert f"playbook: {installed}/playbooks/deploy.yml" in result.stdout


def third_party_imports():
    """Top-level packages plugins/ imports that are neither the stdlib, Ansible nor ours."""
    found = set()
    for path in (REPO / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(name.split(".")[0] for name in names)
    return found - set(sys.stdlib_module_names) - {"ansible", "ansible_collections", "__future__"}


def requirement_name(line):
    return re.split(r"[<>=!~ \[;#]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_execution_environment_declares_what_the_plugins_import(installed_collection, tmp_path):
    _, install_dir = installed_collection
    result = run(str(BIN / "ansible-builder"), "introspect", str(install_dir), cwd=tmp_path)
    declared = {requirement_name(line) for line in yaml.safe_load(result.stdout)["python"]}
    # PyYAML is imported as yaml and is in every execution environment's base image already.
    distribution = {"yaml": "pyyaml"}
    needed = {distribution.get(name, name).lower() for name in third_party_imports()}

    assert "redis" in needed
    assert needed - {"pyyaml"} <= declared


AWX = REPO / "examples" / "awx"


@pytest.mark.parametrize("playbook", sorted(
    path.name for path in AWX.glob("*.yml") if path.name != "execution-environment.yml"))
def test_awx_example_playbooks_resolve_against_the_installed_collection(
        installed_collection, tmp_path, playbook):
    _, install_dir = installed_collection
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(install_dir),
               ANSIBLE_CONFIG=str(tmp_path / "none.cfg"))
    run(str(BIN / "ansible-playbook"), str(AWX / playbook), "-i",
        str(AWX / "inventory" / "hosts.yml"), "--syntax-check", cwd=tmp_path, env=env)


def test_awx_execution_environment_definition_renders_a_build_context(tmp_path):
    context = tmp_path / "context"
    run(str(BIN / "ansible-builder"), "create", "-f", str(AWX / "execution-environment.yml"),
        "--context", str(context), "--output-filename", "Containerfile", cwd=AWX)

    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile
    copied = context / "_build" / "requirements.yml"
    assert yaml.safe_load(copied.read_text()) == yaml.safe_load(
        (AWX / "collections" / "requirements.yml").read_text())
