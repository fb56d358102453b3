"""The collection builds into a tarball that installs and exposes its playbooks by FQCN."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args, cwd=None, env=None):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("build")
    install_dir = tmp_path_factory.mktemp("collections")
    run(str(BIN / "ansible-galaxy"), "collection", "build", str(REPO), "--output-path",
        str(build_dir))
    tarball = next(build_dir.glob("aws_masking-gateway-*.tar.gz"))
    # --force and a neutral working directory: from the clone, ansible.cfg's symlinked
    # collections path would make the collection look installed already.
    run(str(BIN / "ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p",
        str(install_dir), cwd=build_dir)
    return tarball, install_dir


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
