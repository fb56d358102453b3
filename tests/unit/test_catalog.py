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
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))

import aws_masker_engine as engine

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
    assert found, f"{pattern.name} does not match its example {example!r}"
    start, end = pattern.masked_span(found)
    return example[start:end]


# ---------------------------------------------------------------- format


def test_catalog_header_and_first_entry():
    assert RAW["version"] == 1
    assert ENTRIES[0]["name"] == "masker_token"
    assert ENTRIES[0]["token"] == "TOKEN"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_entry_fields(entry):
    assert set(entry) <= {"name", "token", "literals", "regex", "value_group", "description",
                          "examples", "counterexamples"}
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
        # Among other lines the whole catalog gives the identifier to this entry, not to an
        # earlier one that would claim it under another type or cut it short.
        found = CATALOG.scan("see:\n" + example + "\nhere")
        mine = [(m.name, m.value, m.token_code) for m in found if m.value == expected]
        assert mine == [(pattern.name, expected, pattern.token_code)], example


@pytest.mark.parametrize("pattern", PATTERNS, ids=_ids(PATTERNS))
def test_counterexamples_are_not_matched(pattern):
    for counterexample in pattern.counterexamples:
        assert pattern.compiled.search(counterexample) is None, counterexample
        assert pattern.name not in [m.name for m in CATALOG.scan(counterexample)]


def test_catalog_error_names_the_entry():
    bad = {"version": 1, "patterns": [{"name": "x", "token": "bad code", "regex": "x"}]}
    with pytest.raises(engine.CatalogError, match=r"'x'.*token code"):
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
            raise ValueError(f"{message.value.decode()} at {offset.value}")
        return code

    def scan(self, catalog, text):
        """The Lua engine's loop: one alternation, leftmost match, earlier entry first."""
        code = getattr(catalog, "_pcre2_code", None)
        if code is None:
            code = self.compile(catalog.combined.pattern)
            catalog._pcre2_code = code
        data = self.lib.pcre2_match_data_create_from_pattern_8(code, None)
        groups = [self.lib.pcre2_substring_number_from_name_8(code, f"p{i}".encode())
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
        texts.extend(f"see {t} here\n{t}" for t in pattern.examples + pattern.counterexamples)
    for sub in ("real", "negative"):
        folder = os.path.join(CORPUS, sub)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if not name.endswith(".expect.json"):
                    with open(os.path.join(folder, name), encoding="utf-8") as handle:
                        texts.append(handle.read())
    return texts


@needs_pcre2
def test_combined_regex_fits_pcre2_with_room_to_grow():
    # PCRE2 built with the usual 2-byte links refuses compiled patterns over 64 KiB; bounded
    # repeats of groups ((?:...){0,200}) are copied out in full and reach that quickly.
    code = PCRE2.compile(CATALOG.combined.pattern)
    size = ctypes.c_size_t()
    PCRE2.lib.pcre2_pattern_info_8.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
    assert PCRE2.lib.pcre2_pattern_info_8(code, 22, ctypes.byref(size)) == 0  # PCRE2_INFO_SIZE
    assert size.value < 56 * 1024, size.value


@needs_pcre2
def test_pcre2_scan_equals_the_python_twin():
    for text in _parity_texts():
        twin = [(m.name, m.value) for m in CATALOG.scan(text)]
        assert PCRE2.scan(CATALOG, text) == twin, text[:200]


# ---------------------------------------------------------------- the twin's API


def test_importable_as_a_collection_module_utils():
    collections = os.path.join(REPO, "collections")
    if not os.path.isdir(os.path.join(collections, "ansible_collections")):
        pytest.skip("no collections/ansible_collections link in this checkout")
    code = ("from ansible_collections.aws_masking.gateway.plugins.module_utils "
            "import aws_masker_engine as e; print(e.mask_text('vpc-0a1b2c3d'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, env=dict(os.environ, PYTHONPATH=collections))
    assert (result.returncode, result.stdout.strip()) == (0, "AWS_VPC_000001"), result.stderr


def test_default_catalog_path_is_the_collection_catalog():
    assert os.path.samefile(engine.default_catalog_path(), CATALOG_PATH)


def test_scan_reports_spans_types_and_values():
    text = "i-0a1b2c3d on 10.0.1.5 in vpc-a01106c2"
    found = engine.scan(text)
    assert [(m.start, m.end, m.name, m.token_code, m.value) for m in found] == [
        (0, 10, "ec2_instance_id", "EC2", "i-0a1b2c3d"),
        (14, 22, "private_ipv4", "PRIVATE_IP", "10.0.1.5"),
        (26, 38, "vpc_id", "VPC", "vpc-a01106c2")]
    assert engine.scan("nothing to see, multi-tenant i-18n") == []


def test_value_group_masks_only_the_value():
    text = '"OwnerId": "111122223333", "SecretKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'
    masked = engine.mask_text(text)
    assert masked == '"OwnerId": "AWS_ACCOUNT_000001", "SecretKey": "AWS_SECRET_KEY_000001"'


def test_tokens_are_deterministic_and_one_per_original():
    tokenizer = engine.InMemoryTokenizer()
    first = engine.mask_text("vpc-0a1b2c3d vpc-1b2c3d4e vpc-0a1b2c3d", tokenizer)
    assert first == "AWS_VPC_000001 AWS_VPC_000002 AWS_VPC_000001"
    assert engine.mask_text("vpc-1b2c3d4e", tokenizer) == "AWS_VPC_000002"
    assert engine.mask_text("vpc-1b2c3d4e") == "AWS_VPC_000001", "fresh tokenizer, fresh numbers"
    assert len(tokenizer) == 2


def test_one_token_per_code_across_entries():
    # The same bucket in an s3:// URL and in a virtual host comes from two entries.
    masked = engine.mask_text("s3://my-logs-data/x and https://my-logs-data.s3.amazonaws.com/x")
    assert masked == ("s3://AWS_S3_BUCKET_000001/x and "
                      "https://AWS_S3_BUCKET_000001.s3.amazonaws.com/x")


def test_unmask_restores_known_tokens_and_leaves_unknown_ones():
    tokenizer = engine.InMemoryTokenizer()
    masked = engine.mask_text("sg-903004f8 and AWS_EC2_000042", tokenizer)
    assert masked == "AWS_SG_000001 and AWS_TOKEN_000001"
    reply = masked + " AWS_SG_000009"
    assert engine.unmask_text(reply, tokenizer) == "sg-903004f8 and AWS_EC2_000042 AWS_SG_000009"


def test_tokenizer_round_trips_through_a_mapping():
    tokenizer = engine.InMemoryTokenizer()
    engine.mask_text("vpc-0a1b2c3d i-0a1b2c3d", tokenizer)
    mapping = {t: tokenizer.original_for(t) for t in tokenizer.tokens()}
    rebuilt = engine.InMemoryTokenizer.from_mapping(mapping)
    assert engine.mask_text("vpc-0a1b2c3d vpc-1b2c3d4e", rebuilt) == "AWS_VPC_000001 AWS_VPC_000002"
    with pytest.raises(ValueError):
        engine.InMemoryTokenizer.from_mapping({"not-a-token": "x"})


def test_count_by_type_never_holds_values():
    counts = engine.MaskingEngine().count("i-0a1b2c3d i-0a1b2c3d 10.0.1.5")
    assert counts == {"ec2_instance_id": 2, "private_ipv4": 1}


def test_value_group_that_does_not_end_the_match_falls_back_to_the_whole_match():
    # Same rule as the Lua engine: a broken entry masks more, never less.
    data = {"version": 1, "patterns": [
        {"name": "odd", "token": "ODD", "value_group": "v", "regex": "key=(?P<v>[0-9]+);"}]}
    found = engine.Catalog.from_data(data).scan("a key=42; b")
    assert [(m.start, m.end, m.value) for m in found] == [(2, 9, "key=42;")]
