# -*- coding: utf-8 -*-
"""The pattern catalog: its format, its regex dialect, and its own examples.

The dialect is the common subset of PCRE (ngx.re, no "u" flag) and Python ``re`` with re.ASCII.
Where the distribution's libpcre2 is loadable, every regex is also compiled by PCRE2 itself and
the catalog's scan is replayed there the way the Lua engine runs it, so a construct one engine
reads differently from the other fails here rather than in the gateway.
"""

import ctypes
import ctypes.util
import os
import re
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))

import aws_masker_engine as engine  # noqa: E402

CATALOG_PATH = os.path.join(REPO, "catalog", "aws_patterns.yml")
CORPUS = os.environ.get("AWS_MASKING_CORPUS") or os.path.join(
    os.path.dirname(REPO), "shared", "corpus")

with open(CATALOG_PATH, encoding="utf-8") as _handle:
    RAW = yaml.safe_load(_handle)
ENTRIES = RAW["patterns"]
CATALOG = engine.Catalog.from_data(RAW)
PATTERNS = CATALOG.patterns
GROUP_NAME_RE = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")


def _ids(patterns):
    return [p.name for p in patterns]


def _expected_value(pattern, example):
    found = pattern.compiled.search(example)
    assert found, "%s does not match its example %r" % (pattern.name, example)
    start, end = pattern.masked_span(found)
    return example[start:end]


# ---------------------------------------------------------------- format


def test_catalog_header_and_first_entry():
    assert RAW["version"] == 1
    assert ENTRIES[0]["name"] == "masker_token"
    assert ENTRIES[0]["token"] == "TOKEN"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_entry_fields(entry):
    assert set(entry) <= {"name", "token", "regex", "value_group", "description", "examples",
                          "counterexamples"}
    assert re.match(r"^[a-z][a-z0-9_]*$", entry["name"])
    assert engine.TOKEN_CODE_RE.match(entry["token"])
    assert not engine.TOKEN_CODE_DIGIT_RUN_RE.search(entry["token"])
    assert isinstance(entry["regex"], str) and "\n" not in entry["regex"]
    assert entry.get("description")
    assert entry.get("examples"), "every entry shows what it masks"


def test_names_and_group_names_are_unique_across_the_catalog():
    names = [e["name"] for e in ENTRIES]
    assert len(names) == len(set(names))
    groups = [g for e in ENTRIES for g in GROUP_NAME_RE.findall(e["regex"])]
    assert len(groups) == len(set(groups)), "group names are global to the alternation"
    assert not [g for g in groups if re.match(r"^p[0-9]+$", g)], "pN names the alternatives"


# ---------------------------------------------------------------- dialect


@pytest.mark.parametrize("pattern", PATTERNS, ids=_ids(PATTERNS))
def test_regex_is_in_the_shared_dialect(pattern):
    assert "(?<" not in re.sub(r"\(\?<[=!]", "", pattern.regex), "write (?P<name>...)"
    assert engine.dialect_problems(pattern.regex) == []
    re.compile(pattern.regex, re.ASCII)
    assert pattern.compiled.match("") is None, "an empty match would stall the Lua scan"


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p.value_group],
                         ids=_ids([p for p in PATTERNS if p.value_group]))
def test_value_group_is_a_suffix_of_every_example_match(pattern):
    for example in pattern.examples:
        found = pattern.compiled.search(example)
        assert found, example
        assert found.group(pattern.value_group), example
        assert found.end(pattern.value_group) == found.end(), example


def test_dialect_check_rejects_what_one_engine_reads_differently():
    for regex in [r"(?<name>x)", r"a++", r"\h", r"(a)\1", r"x\z", r"(?i)x", r"\p{L}"]:
        assert engine.dialect_problems(regex), regex
    for regex in [r"(?P<n>x)", r"(?<=ab)c", r"(?<![a-z])x", r"(?i:x)", r"\\z", r"[\x20\t]"]:
        assert not engine.dialect_problems(regex), regex


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize("pattern", PATTERNS, ids=_ids(PATTERNS))
def test_examples_are_masked_by_their_own_entry(pattern):
    for example in pattern.examples:
        expected = _expected_value(pattern, example)
        if pattern.value_group is None:
            assert expected == example, "without a value group the example is the identifier"
        # In running text the whole catalog gives the identifier to this entry, not to an
        # earlier one that would claim it under another type or cut it short.
        found = CATALOG.scan("see " + example + " here")
        mine = [(m.name, m.value, m.token_code) for m in found if m.value == expected]
        assert mine == [(pattern.name, expected, pattern.token_code)], example


@pytest.mark.parametrize("pattern", PATTERNS, ids=_ids(PATTERNS))
def test_counterexamples_are_not_matched(pattern):
    for counterexample in pattern.counterexamples:
        assert pattern.compiled.search(counterexample) is None, counterexample
        assert pattern.name not in [m.name for m in CATALOG.scan(counterexample)]


def test_catalog_error_names_the_entry():
    bad = {"version": 1, "patterns": [{"name": "x", "token": "bad code", "regex": "x"}]}
    with pytest.raises(engine.CatalogError, match="'x'.*token code"):
        engine.Catalog.from_data(bad)
    bad = {"version": 1, "patterns": [{"name": "y", "token": "Y", "regex": "(?<n>x)"}]}
    with pytest.raises(engine.CatalogError, match="'y'"):
        engine.Catalog.from_data(bad)
    bad = {"version": 1, "patterns": [
        {"name": "a", "token": "A", "regex": "(?P<v>a)"},
        {"name": "b", "token": "B", "regex": "(?P<v>b)"}]}
    with pytest.raises(engine.CatalogError, match="alternation"):
        engine.Catalog.from_data(bad)


# ---------------------------------------------------------------- PCRE2 parity


class Pcre2:
    """Just enough of libpcre2-8 through ctypes to run the Lua engine's scan loop."""

    UNSET = ctypes.c_size_t(-1).value

    def __init__(self, library):
        lib = ctypes.CDLL(library)
        lib.pcre2_compile_8.restype = ctypes.c_void_p
        lib.pcre2_compile_8.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                        ctypes.POINTER(ctypes.c_int),
                                        ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
        lib.pcre2_match_data_create_from_pattern_8.restype = ctypes.c_void_p
        lib.pcre2_match_data_create_from_pattern_8.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pcre2_match_8.restype = ctypes.c_int
        lib.pcre2_match_8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                      ctypes.c_size_t, ctypes.c_uint32, ctypes.c_void_p,
                                      ctypes.c_void_p]
        lib.pcre2_get_ovector_pointer_8.restype = ctypes.POINTER(ctypes.c_size_t)
        lib.pcre2_get_ovector_pointer_8.argtypes = [ctypes.c_void_p]
        lib.pcre2_substring_number_from_name_8.restype = ctypes.c_int
        lib.pcre2_substring_number_from_name_8.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.pcre2_get_error_message_8.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        self.lib = lib

    def compile(self, regex):
        error, offset = ctypes.c_int(), ctypes.c_size_t()
        raw = regex.encode("ascii")
        code = self.lib.pcre2_compile_8(raw, len(raw), 0, ctypes.byref(error),
                                        ctypes.byref(offset), None)
        if not code:
            message = ctypes.create_string_buffer(256)
            self.lib.pcre2_get_error_message_8(error.value, message, 256)
            raise ValueError("%s at %d" % (message.value.decode(), offset.value))
        return code

    def scan(self, catalog, text):
        """The Lua engine's loop: one alternation, leftmost match, earlier entry first."""
        code = getattr(catalog, "_pcre2_code", None)
        if code is None:
            code = self.compile(catalog.combined.pattern)
            catalog._pcre2_code = code
        data = self.lib.pcre2_match_data_create_from_pattern_8(code, None)
        groups = [self.lib.pcre2_substring_number_from_name_8(code, ("p%d" % i).encode())
                  for i in range(len(catalog.patterns))]
        values = [self.lib.pcre2_substring_number_from_name_8(code, p.value_group.encode())
                  if p.value_group else None for p in catalog.patterns]
        subject = text.encode("utf-8")
        found, position = [], 0
        while position <= len(subject):
            if self.lib.pcre2_match_8(code, subject, len(subject), position, 0, data, None) < 0:
                break
            ovector = self.lib.pcre2_get_ovector_pointer_8(data)
            start, end = ovector[0], ovector[1]
            if start == end:
                position = end + 1
                continue
            index = next(i for i, g in enumerate(groups) if ovector[2 * g] != self.UNSET)
            value = subject[start:end]
            if values[index] is not None and ovector[2 * values[index]] != self.UNSET:
                group_value = subject[ovector[2 * values[index]]:ovector[2 * values[index] + 1]]
                if group_value and value.endswith(group_value):
                    value = group_value
            found.append((catalog.patterns[index].name, value.decode("utf-8")))
            position = end
        return found


def _load_pcre2():
    for candidate in (ctypes.util.find_library("pcre2-8"), "libpcre2-8.so.0"):
        if candidate:
            try:
                return Pcre2(candidate)
            except OSError:
                continue
    return None


PCRE2 = _load_pcre2()
needs_pcre2 = pytest.mark.skipif(PCRE2 is None, reason="libpcre2-8 is not installed")


@needs_pcre2
@pytest.mark.parametrize("pattern", PATTERNS, ids=_ids(PATTERNS))
def test_regex_compiles_in_pcre2(pattern):
    PCRE2.compile(pattern.regex)


def _parity_texts():
    texts = []
    for pattern in PATTERNS:
        texts.extend("see %s here" % t for t in pattern.examples + pattern.counterexamples)
    for sub in ("real", "negative"):
        folder = os.path.join(CORPUS, sub)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if not name.endswith(".expect.json"):
                    with open(os.path.join(folder, name), encoding="utf-8") as handle:
                        texts.append(handle.read())
    return texts


@needs_pcre2
def test_pcre2_scan_equals_the_python_twin():
    for text in _parity_texts():
        twin = [(m.name, m.value) for m in CATALOG.scan(text)]
        assert PCRE2.scan(CATALOG, text) == twin, text[:200]
