"""Shared test fixtures: where the repository and the evaluation corpus are."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_module(name, path):
    """Imports a module of the collection from its file, without the collection installed."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def corpus_dir():
    configured = os.environ.get("AWS_MASKING_CORPUS")
    return Path(configured) if configured else REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus():
    path = corpus_dir()
    if not (path / "real").is_dir():
        pytest.fail(f"evaluation corpus not found at {path}; set AWS_MASKING_CORPUS")
    return path


def collection_module_utils(name):
    """Imports plugins/module_utils/<name> by its collection name, as modules import it."""
    collections = str(REPO / "collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    package = "ansible_collections.aws_masking.gateway.plugins.module_utils"
    return importlib.import_module(f"{package}.{name}")


def install_from_tarball(build_dir, collections_dir):
    """Builds the collection into a tarball in build_dir and installs it from there into
    collections_dir, as a user would; returns the tarball."""
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")

    def run(*args):
        result = subprocess.run([galaxy, "collection", *args], cwd=build_dir,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    run("build", str(REPO), "--output-path", str(build_dir))
    tarball = next(build_dir.glob("aws_masking-gateway-*.tar.gz"))
    # --force and a neutral working directory (build_dir): from the clone, ansible.cfg's
    # symlinked collections path would make the collection look installed already.
    run("install", "--force", str(tarball), "-p", str(collections_dir))
    return tarball
