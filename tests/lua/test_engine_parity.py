"""Parity of the two engines: the Lua catalog (real ngx.re inside nginx) and the Python twin
must find exactly the same identifiers, at the same byte offsets, with the same types, on every
corpus file and on every catalog example, repeated originals included (the catalog's matches
and every other occurrence of the values they found, as both engines mask a text). Any
difference fails, whichever side it comes from.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml

from bench import _harness
from tests.conftest import REPO, corpus_dir

sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
import aws_masker_engine

# Runs in nginx's init phase: scans each input file and writes one JSON line per file.
SCANNER = r"""
local cjson = require "cjson"
local catalog = assert(require("aws_masker.catalog").load(CATALOG))
local repeats = require "aws_masker.repeats"
local out = assert(io.open(OUTPUT, "wb"))
for _, path in ipairs(INPUTS) do
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  local found = {}
  local matches, err = catalog:scan(text)
  assert(matches or not err, err)
  if matches then
    matches = repeats.extend(repeats.new(matches), text, matches)
  end
  for _, m in ipairs(matches or {}) do
    found[#found + 1] = { m.start - 1, m.stop, m.name, m.value }
  end
  out:write(cjson.encode({ path = path, matches = found }), "\n")
end
out:close()
os.exit(0, true)
"""


def lua_scan(paths, tmp_path):
    catalog_json = _harness.catalog_json(tmp_path)
    output = tmp_path / "lua_matches.jsonl"
    script = tmp_path / "scan.lua"
    script.write_text(
        f"local CATALOG = {json.dumps(str(catalog_json))}\n"
        f"local OUTPUT = {json.dumps(str(output))}\n"
        "local INPUTS = {" + ", ".join(json.dumps(str(p)) for p in paths) + "}\n" + SCANNER)
    run = _harness.run_lua_in_init(tmp_path, script)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = output.read_text().splitlines()
    # lua-cjson writes an empty table as {}: no match.
    return {entry["path"]: entry["matches"] or [] for entry in map(json.loads, lines)}


def python_scan(path):
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8")
    found = []
    for match in aws_masker_engine.default_engine().scan(text):
        start = len(text[:match.start].encode("utf-8"))
        found.append([start, start + len(match.value.encode("utf-8")), match.name,
                      match.value])
    return found


def example_files(tmp_path):
    catalog = yaml.safe_load((REPO / "catalog" / "aws_patterns.yml").read_text())
    texts = []
    for pattern in catalog["patterns"]:
        texts += pattern.get("examples", []) + pattern.get("counterexamples", [])
    path = tmp_path / "examples.txt"
    # One per line, and all on one line with spaces, so boundaries between them are exercised.
    path.write_text("\n".join(texts) + "\n" + " ".join(texts) + "\n")
    return [path]


def repeats_file(corpus_texts, tmp_path):
    """The real corpus files with every value found repeated next to the neighbours the
    boundary rule of repeated originals looks at, so both engines add the same occurrences."""
    separators = [" ", "_", ".", ".5", "x", "-", "/", '"', "\u00e9", "9"]
    parts = []
    for path in corpus_texts:
        if "/real/" not in path:
            continue
        text = Path(path).read_text(encoding="utf-8")
        parts.append(text)
        for i, match in enumerate(aws_masker_engine.default_engine().catalog.scan(text)):
            before = separators[(i + 1) % len(separators)]
            after = separators[(i * 7 + 1) % len(separators)]
            parts.append(f"{before}{match.value}{after} {match.value}")
    path = tmp_path / "repeats.txt"
    path.write_text("\n".join(parts), encoding="utf-8")
    return [path]


@pytest.fixture(scope="module")
def corpus_texts():
    return sorted(str(p) for kind in ("real", "negative") for p in (corpus_dir() / kind).iterdir()
                  if not p.name.endswith(".expect.json"))


def test_lua_and_python_find_the_same_identifiers(corpus_texts, tmp_path):
    paths = corpus_texts + [str(p) for p in example_files(tmp_path)
                            + repeats_file(corpus_texts, tmp_path)]

    lua = lua_scan(paths, tmp_path)

    assert len(lua) == len(paths)
    differences = {}
    for path in paths:
        python = python_scan(path)
        if lua[path] != python:
            only_lua = [m for m in lua[path] if m not in python]
            only_python = [m for m in python if m not in lua[path]]
            differences[Path(path).name] = {"lua only": only_lua[:5],
                                            "python only": only_python[:5]}
    assert differences == {}
    assert sum(len(matches) for matches in lua.values()) > 700
