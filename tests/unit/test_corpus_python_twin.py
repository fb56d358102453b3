"""The Python twin against the shared evaluation corpus, scored by the corpus's own tool.

Every corpus file is masked into tmp_path (mirroring real/ and negative/), then
``check_corpus.py score`` judges the output: every must_mask value gone, every must_keep value
intact, on every file. Negative files must come back byte for byte. The corpus is found at
``<repo>/../shared/corpus`` or through AWS_MASKING_CORPUS.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))

import aws_masker_engine as engine

CORPUS = os.environ.get("AWS_MASKING_CORPUS") or os.path.join(
    os.path.dirname(REPO), "shared", "corpus")
SCORER = os.path.join(CORPUS, "tools", "check_corpus.py")
SUBDIRS = ("real", "negative")

pytestmark = pytest.mark.skipif(not os.path.isfile(SCORER),
                                reason=f"evaluation corpus not found at {CORPUS}")

FILE_LINE_RE = re.compile(r"^(real|negative)/(\S+): leaked (\d+)/(\d+), damaged (\d+)/(\d+)$")


def _corpus_files():
    for sub in SUBDIRS:
        folder = os.path.join(CORPUS, sub)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".expect.json"):
                yield sub, name


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Mask the corpus once with a fresh tokenizer per file and score it."""
    out = tmp_path_factory.mktemp("masked")
    masking = engine.MaskingEngine()
    originals, masked = {}, {}
    for sub, name in _corpus_files():
        with open(os.path.join(CORPUS, sub, name), encoding="utf-8", newline="") as handle:
            text = handle.read()
        result = masking.mask_text(text, engine.InMemoryTokenizer())
        (out / sub).mkdir(exist_ok=True)
        with open(str(out / sub / name), "w", encoding="utf-8", newline="") as handle:
            handle.write(result)
        originals[(sub, name)], masked[(sub, name)] = text, result
    report = subprocess.run([sys.executable, SCORER, "score", CORPUS, str(out)],
                            capture_output=True, text=True, check=True).stdout
    per_file = {}
    for line in report.splitlines():
        found = FILE_LINE_RE.match(line)
        if found:
            per_file[(found.group(1), found.group(2))] = tuple(int(n) for n in found.groups()[2:])
    return {"report": report, "per_file": per_file, "originals": originals, "masked": masked}


def test_every_corpus_file_was_scored(scored):
    assert set(scored["per_file"]) == set(_corpus_files()), scored["report"]


@pytest.mark.parametrize("sub,name", list(_corpus_files()))
def test_no_leak_and_no_damage(scored, sub, name):
    leaked, _total, damaged, _kept = scored["per_file"][(sub, name)]
    assert (leaked, damaged) == (0, 0), scored["report"]


@pytest.mark.parametrize("name", [n for s, n in _corpus_files() if s == "negative"])
def test_negative_files_are_unchanged(scored, name):
    assert scored["masked"][("negative", name)] == scored["originals"][("negative", name)]


def test_totals_are_perfect(scored):
    assert "TOTAL recall 1.000" in scored["report"]
    assert "TOTAL keep-intact 1.000" in scored["report"]


@pytest.mark.parametrize("sub,name", [f for f in _corpus_files() if f[0] == "real"])
def test_masked_text_restores_to_the_original(scored, sub, name):
    tokenizer = engine.InMemoryTokenizer()
    masking = engine.MaskingEngine()
    original = scored["originals"][(sub, name)]
    assert masking.unmask_text(masking.mask_text(original, tokenizer), tokenizer) == original
