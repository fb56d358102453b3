# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Python twin of the gateway's masking engine.

It compiles the same pattern catalog as the Lua engine (``catalog/aws_patterns.yml``) into the
same single alternation and scans text the same way: leftmost match first, the earlier catalog
entry first at the same offset, no overlaps. The controller uses it to sanitise diagnostics and
in the ``aws-mask`` command-line scanner; the parity tests hold it equal to the Lua engine.

Standard library and PyYAML only, Python 3.9+.
"""

import os
import re
from collections import Counter, namedtuple

try:
    import yaml
except ImportError:  # pragma: no cover - reported when a catalog is loaded
    yaml = None

TOKEN_CODE_RE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z][A-Z0-9]*)*$")
# A run of six digits inside a code would make tokens ambiguous to the restore regex.
TOKEN_CODE_DIGIT_RUN_RE = re.compile(r"[0-9]{6}")
TOKEN_RE = re.compile(r"AWS_[A-Z][A-Z0-9_]*_[0-9]{6}(?![0-9])")
TOKEN_SEQUENCE_LIMIT = 999999

# Constructs one of the two engines would read differently or not at all.
_DIALECT_PROBLEMS = (
    (re.compile(r"\(\?<(?![=!])"), "named group written (?<name>...), use (?P<name>...)"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[hHRzZKGXA]"), "escape not shared by PCRE and Python re"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]"), "numeric backreference"),
    (re.compile(r"\(\?P=|\(\?P>|\(\?&|\(\?R\)|\(\?\|"), "backreference, recursion or branch reset"),
    (re.compile(r"(?<!\\)(?:\\\\)*[*+?}]\+"), "possessive quantifier"),
    (re.compile(r"\(\?[a-zA-Z]*[uLx][a-zA-Z]*[:)]"), "inline flag outside i, m, s"),
    (re.compile(r"\(\?[imsa]+\)"), "global inline flag, scope it as (?i:...)"),
    (re.compile(r"\\[pPNu]"), "unicode escape"),
)

Match = namedtuple("Match", ["start", "end", "name", "token_code", "value"])
Match.__doc__ = "One detected identifier: [start, end) is the masked span, value its text."


class CatalogError(ValueError):
    """The pattern catalog cannot be used: the message names the entry and the cause."""


def default_catalog_path():
    """``<collection root>/catalog/aws_patterns.yml``, this file being in plugins/module_utils."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(os.path.dirname(here)), "catalog", "aws_patterns.yml")


def dialect_problems(regex):
    """Return the reasons ``regex`` is outside the dialect both engines share (empty when fine)."""
    return [reason for probe, reason in _DIALECT_PROBLEMS if probe.search(regex)]


class Pattern:
    """One catalog entry, compiled on its own for checks and diagnostics."""

    __slots__ = (
        "compiled",
        "counterexamples",
        "description",
        "examples",
        "literals",
        "name",
        "regex",
        "token_code",
        "value_group",
    )

    def __init__(self, entry, index):
        if not isinstance(entry, dict):
            raise CatalogError(f"pattern #{index} is not a mapping")
        for key in ("name", "token", "regex"):
            if not isinstance(entry.get(key), str) or not entry.get(key):
                raise CatalogError(f"pattern #{index}: {key!r} must be a non-empty string")
        self.name = entry["name"]
        self.token_code = entry["token"]
        self.regex = entry["regex"]
        self.value_group = entry.get("value_group") or None
        self.description = entry.get("description", "")
        self.examples = list(entry.get("examples") or [])
        self.counterexamples = list(entry.get("counterexamples") or [])
        # The regex matches only in a text holding one of these (ASCII case ignored); scan()
        # leaves the pattern out of other texts. tests/unit/test_catalog_literals.py proves it.
        literals = entry.get("literals") or []
        if not isinstance(literals, list) or not all(
                isinstance(lit, str) and lit for lit in literals):
            raise CatalogError(f"pattern {self.name!r}: literals must be non-empty strings")
        self.literals = tuple(lit.lower() for lit in literals)

        where = f"pattern {self.name!r}"
        if not TOKEN_CODE_RE.match(self.token_code) or TOKEN_CODE_DIGIT_RUN_RE.search(
                self.token_code):
            raise CatalogError(f"{where}: token code {self.token_code!r} is not "
                               "[A-Z][A-Z0-9]*(_[A-Z][A-Z0-9]*)* without a run of six digits")
        problems = dialect_problems(self.regex)
        if problems:
            raise CatalogError(f"{where}: {'; '.join(problems)}")
        try:
            self.compiled = re.compile(self.regex, re.ASCII)
        except re.error as exc:
            raise CatalogError(f"{where}: regex does not compile: {exc}") from exc
        if self.value_group is not None and self.value_group not in self.compiled.groupindex:
            raise CatalogError(f"{where}: value_group {self.value_group!r} is not a named "
                               "group of the regex")

    def masked_span(self, match):
        """Return the (start, end) ``match`` masks: the value group, else the whole match.

        A value group that is empty, did not take part or does not end the match falls back to
        the whole match, as in the Lua engine: masking more is the safe side of a catalog bug,
        and the catalog tests reject such entries before they ship.
        """
        end = match.end()
        if self.value_group is not None:
            value = match.group(self.value_group)
            if value and match.string[end - len(value):end] == value:
                return end - len(value), end
        return match.start(), end


class Catalog:
    """The ordered pattern list and the single alternation both engines build from it."""

    # Below this length one alternation call is cheaper than a search per pattern.
    ALTERNATION_BELOW = 256

    def __init__(self, patterns, version=1):
        self.version = version
        self.patterns = patterns
        self.by_name = {}
        for pattern in patterns:
            if pattern.name in self.by_name:
                raise CatalogError(f"pattern name {pattern.name!r} is used twice")
            self.by_name[pattern.name] = pattern
        self._alternation_groups = [f"p{i}" for i in range(len(patterns))]
        clashes = set(self._alternation_groups).intersection(
            group for pattern in patterns for group in pattern.compiled.groupindex)
        if clashes:
            raise CatalogError(f"group names {', '.join(sorted(clashes))} are reserved for the "
                               "alternation")
        alternation = "|".join(f"(?P<{group}>{pattern.regex})"
                               for group, pattern in zip(self._alternation_groups, patterns))
        try:
            self.combined = re.compile(alternation, re.ASCII)
        except re.error as exc:
            # Typically the same group name in two entries: names are global to the alternation.
            raise CatalogError(f"the combined alternation does not compile: {exc}") from exc
        self._pattern_by_group = dict(zip(self._alternation_groups, patterns))

    @classmethod
    def from_data(cls, data):
        if not isinstance(data, dict) or not isinstance(data.get("patterns"), list):
            raise CatalogError("the catalog must be a mapping with a 'patterns' list")
        patterns = [Pattern(entry, index) for index, entry in enumerate(data["patterns"])]
        if not patterns:
            raise CatalogError("the catalog has no patterns")
        return cls(patterns, version=data.get("version", 1))

    @classmethod
    def load(cls, path=None):
        if yaml is None:
            raise CatalogError("PyYAML is required to read the pattern catalog")
        path = path or default_catalog_path()
        with open(path, encoding="utf-8") as handle:
            return cls.from_data(yaml.safe_load(handle))

    def scan(self, text):
        """Return every identifier in ``text`` as a list of Match, in text order.

        The result is the single alternation's (see scan_alternation), found like the Lua
        engine finds it on long texts: each pattern searched on its own, its next match kept,
        the leftmost taken (the earlier pattern on a tie). Python's re, like PCRE, cannot skip
        ahead in a large alternation, while a lone pattern with a literal prefix can. A pattern
        whose literals are all absent from the text is left out (it cannot match there).
        """
        lowered = text.lower()
        active = [(index, pattern) for index, pattern in enumerate(self.patterns)
                  if not pattern.literals or any(lit in lowered for lit in pattern.literals)]
        if not active:
            return []
        if len(text) < self.ALTERNATION_BELOW:
            return self.scan_alternation(text)
        upcoming = [None] * len(self.patterns)  # None: not searched yet; False: no more
        found = []
        pos = 0
        while True:
            best = best_index = None
            for index, pattern in active:
                match = upcoming[index]
                if match is False:
                    continue
                if match is None or match.start() < pos:
                    match = upcoming[index] = self._search(pattern, text, pos)
                    if match is False:
                        continue
                if best is None or match.start() < best.start():
                    best, best_index = match, index
            if best is None:
                return found
            pattern = self.patterns[best_index]
            start, end = pattern.masked_span(best)
            if start != end:
                found.append(Match(start, end, pattern.name, pattern.token_code, text[start:end]))
            pos = best.end()

    @staticmethod
    def _search(pattern, text, pos):
        while pos <= len(text):
            match = pattern.compiled.search(text, pos)
            if match is None:
                return False
            if match.end() > match.start():
                return match
            pos = match.start() + 1  # an empty match masks nothing: look further
        return False

    def scan_alternation(self, text):
        """The reference scan: the single alternation itself; scan() must always agree."""
        found = []
        for match in self.combined.finditer(text):
            group = match.lastgroup
            pattern = self._pattern_by_group.get(group)
            if pattern is None or match.start(group) != match.start():
                pattern, group = self._matched_alternative(match)
            start, end = pattern.masked_span(match)
            if start == end:
                continue
            found.append(Match(start, end, pattern.name, pattern.token_code, text[start:end]))
        return found

    def _matched_alternative(self, match):
        for group, pattern in self._pattern_by_group.items():
            if match.start(group) >= 0:
                return pattern, group
        raise CatalogError("a match belongs to no catalog entry")  # pragma: no cover


class InMemoryTokenizer:
    """Deterministic tokens ``AWS_<CODE>_<NNNNNN>`` in memory: one token per code and original.

    The gateway keeps the same mapping in Redis; this one lives as long as the object does.
    """

    def __init__(self):
        self._token_by_original = {}
        self._original_by_token = {}
        self._sequence = Counter()

    def token_for(self, match):
        # Keyed by token code like the Redis store, so one bucket found by two entries (an
        # s3:// URL and a virtual host) gets one token.
        key = (match.token_code, match.value)
        token = self._token_by_original.get(key)
        if token is None:
            self._sequence[match.token_code] += 1
            number = self._sequence[match.token_code]
            if number > TOKEN_SEQUENCE_LIMIT:
                raise OverflowError(f"more than {TOKEN_SEQUENCE_LIMIT} tokens of type "
                                    f"{match.token_code}")
            token = f"AWS_{match.token_code}_{number:06d}"
            self._token_by_original[key] = token
            self._original_by_token[token] = match.value
        return token

    def original_for(self, token):
        return self._original_by_token.get(token)

    def tokens(self):
        """The tokens issued so far, in no particular order."""
        return list(self._original_by_token)

    @classmethod
    def from_mapping(cls, mapping):
        """Rebuild a tokenizer from a token -> original table (as ``aws-mask`` saves it)."""
        tokenizer = cls()
        for token, original in mapping.items():
            if not isinstance(original, str) or not TOKEN_RE.fullmatch(token):
                raise ValueError("the mapping holds an entry that is not token -> text")
            code, number = token[len("AWS_"):-7], int(token[-6:])
            tokenizer._token_by_original[(code, original)] = token
            tokenizer._original_by_token[token] = original
            tokenizer._sequence[code] = max(tokenizer._sequence[code], number)
        return tokenizer

    def __len__(self):
        return len(self._original_by_token)


_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_DIGITS = frozenset("0123456789")


def _bounded(text, start, end):
    """Whether text[start:end] stands alone: no [A-Za-z0-9_] touches it, no digit and "." run
    into it from before and no "." and digit continue it after (10.0.0.1 in 10.0.0.12)."""
    if start > 0:
        before = text[start - 1]
        if before in _WORD_CHARS or (before == "." and start > 1
                                     and text[start - 2] in _DIGITS):
            return False
    if end < len(text):
        after = text[end]
        if after in _WORD_CHARS or (after == "." and text[end + 1:end + 2] in _DIGITS):
            return False
    return True


def repeated_originals(text, matches, originals=None):
    """Return ``matches`` with every other bounded occurrence of a found value added.

    A value the catalog found only from its context ("account 123456789012") is masked
    wherever else it stands in the same text. ``originals`` (value -> the Match whose name and
    token code it takes) defaults to the values of ``matches``, the first match of each. The
    rule is the Lua engine's (lua/aws_masker/repeats.lua): catalog matches win over the
    occurrences they overlap; of two overlapping occurrences the leftmost, then the longer, wins.
    """
    if originals is None:
        originals = {}
        for match in matches:
            originals.setdefault(match.value, match)
    if not originals:
        return matches
    found = []
    for value, first in originals.items():
        start = text.find(value)
        while start >= 0:
            end = start + len(value)
            if _bounded(text, start, end):
                found.append(Match(start, end, first.name, first.token_code, value))
            start = text.find(value, start + 1)
    if not found:
        return matches
    found.sort(key=lambda m: (m.start, -m.end))
    out, index, last, added = [], 0, 0, False
    for candidate in found:
        while index < len(matches) and matches[index].end <= candidate.start:
            out.append(matches[index])
            last = matches[index].end
            index += 1
        overlaps_catalog = index < len(matches) and matches[index].start < candidate.end
        if candidate.start >= last and not overlaps_catalog:
            out.append(candidate)
            last = candidate.end
            added = True
    if not added:
        return matches
    return out + list(matches[index:])


def count_by_type(matches):
    """Per-type counts of ``matches`` (a dict name -> occurrences), never the values."""
    return dict(Counter(match.name for match in matches))


class MaskingEngine:
    """Scan, mask and unmask text with one catalog."""

    def __init__(self, catalog=None, catalog_path=None):
        self.catalog = catalog if catalog is not None else Catalog.load(catalog_path)

    def scan(self, text):
        """The catalog's matches of ``text`` and every other occurrence of the values they
        found (repeated_originals), as the gateway masks a request body."""
        return repeated_originals(text, self.catalog.scan(text))

    def count(self, text):
        return count_by_type(self.scan(text))

    def mask_with_report(self, text, tokenizer=None):
        """Return (masked text, per-type counts); ``tokenizer`` defaults to a fresh in-memory one.

        Token numbers follow the order of first appearance, so the same text with a fresh
        tokenizer always gives the same output.
        """
        tokenizer = tokenizer if tokenizer is not None else InMemoryTokenizer()
        matches = self.scan(text)
        pieces = []
        cursor = 0
        for match in matches:
            pieces.append(text[cursor:match.start])
            pieces.append(tokenizer.token_for(match))
            cursor = match.end
        pieces.append(text[cursor:])
        return "".join(pieces), count_by_type(matches)

    def mask_text(self, text, tokenizer=None):
        return self.mask_with_report(text, tokenizer)[0]

    @staticmethod
    def unmask_text(text, tokenizer):
        """Put originals back for the tokens ``tokenizer`` issued; unknown tokens stay."""

        def restore(found):
            original = tokenizer.original_for(found.group(0))
            return found.group(0) if original is None else original

        return TOKEN_RE.sub(restore, text)


_default_engine = None


def default_engine():
    """The engine for the collection's own catalog, loaded once per process."""
    global _default_engine
    if _default_engine is None:
        _default_engine = MaskingEngine()
    return _default_engine


def scan(text):
    return default_engine().scan(text)


def mask_text(text, tokenizer=None):
    return default_engine().mask_text(text, tokenizer)


def unmask_text(text, tokenizer):
    return MaskingEngine.unmask_text(text, tokenizer)
