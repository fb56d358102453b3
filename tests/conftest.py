"""Shared test fixtures: where the repository and the evaluation corpus are."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def corpus_dir():
    configured = os.environ.get("AWS_MASKING_CORPUS")
    return Path(configured) if configured else REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus():
    path = corpus_dir()
    if not (path / "real").is_dir():
        pytest.fail(f"evaluation corpus not found at {path}; set AWS_MASKING_CORPUS")
    return path
