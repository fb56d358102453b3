"""The twin's fast scan (a search per pattern, leftmost kept) equals the single alternation."""

import random
import sys

import pytest

from tests.conftest import REPO, corpus_dir

sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
import aws_masker_engine as engine

CATALOG = engine.default_engine().catalog


def corpus_texts():
    return [p.read_text(encoding="utf-8") for kind in ("real", "negative")
            for p in sorted((corpus_dir() / kind).iterdir())
            if not p.name.endswith(".expect.json")]


@pytest.mark.parametrize("index", range(len(corpus_texts())))
def test_fast_scan_equals_alternation_on_corpus_file(index):
    text = corpus_texts()[index]

    assert CATALOG.scan(text) == CATALOG.scan_alternation(text)


def test_fast_scan_equals_alternation_on_spliced_texts():
    texts = corpus_texts()
    rng = random.Random(20261203)
    for _ in range(200):
        pieces = []
        for _ in range(rng.randrange(5, 40)):
            text = rng.choice(texts)
            start = rng.randrange(len(text))
            pieces.append(text[start:start + rng.randrange(1, 300)])
        spliced = "".join(pieces)

        assert CATALOG.scan(spliced) == CATALOG.scan_alternation(spliced)


def test_both_scan_paths_find_an_identifier():
    short = "i-0123456789abcdef0"
    long_text = short + " " * CATALOG.ALTERNATION_BELOW

    assert [m.value for m in CATALOG.scan(short)] == [short]
    assert [m.value for m in CATALOG.scan(long_text)] == [short]
