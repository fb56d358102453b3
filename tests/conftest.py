"""Shared test fixtures: where the repository and the evaluation corpus are."""

import importlib.util
import os
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
