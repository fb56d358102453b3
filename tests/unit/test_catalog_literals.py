"""The catalog's ``literals``: each entry's regex can only match in a text holding one of them.

Both engines skip an entry in a text without any of its literals (ASCII case ignored), so a
literal that is not required would lose identifiers. ``implies`` proves it from the regex's
parse tree (Python's own parser, the dialect being shared): every match of the regex, including
what its positive lookarounds require around it, holds one of the literals. The proof is
conservative: it may fail to see a literal that is required (then declare a shorter or another
one), never accept one that is not. The examples and the corpus check the same empirically.
"""

import os
import re
import re._constants as sre
import re._parser as sre_parse
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))

import aws_masker_engine as engine

CORPUS = os.environ.get("AWS_MASKING_CORPUS") or os.path.join(
    os.path.dirname(REPO), "shared", "corpus")
with open(os.path.join(REPO, "catalog", "aws_patterns.yml"), encoding="utf-8") as _handle:
    ENTRIES = yaml.safe_load(_handle)["patterns"]

MAX_SET = 64  # a set of exact strings larger than this is given up (no proof, never a wrong one)
UNKNOWN = frozenset({""})


def _product(left, right):
    if len(left) * len(right) > MAX_SET:
        return None
    return frozenset(a + b for a in left for b in right)


def _product_of_prefixes(left, prefixes):
    """left followed by the start of prefixes, cut short until the product is small enough
    (a start of what starts every match also starts every match)."""
    for keep in range(max(len(p) for p in prefixes), -1, -1):
        joined = _product(left, frozenset(p[:keep] for p in prefixes))
        if joined is not None:
            return joined
    return left


class _Node:
    """What one parsed node says about the text it matches (all lower-cased).

    exact: the finite set of strings it matches, or None; prefix/suffix: sets one of which
    starts/ends every match ("" in a set: nothing known); holds: whether every match of it
    (with the text its positive lookarounds see) contains one of the literals.
    """

    def __init__(self, exact=None, prefix=UNKNOWN, suffix=UNKNOWN, holds=False):
        if exact is not None:
            prefix = suffix = exact
        self.exact, self.prefix, self.suffix, self.holds = exact, prefix, suffix, holds


class _Prover:
    def __init__(self, literals):
        self.literals = [lit.lower() for lit in literals]

    def covered(self, strings):
        """Every string of the set holds a literal (a set holding "" proves nothing)."""
        return (strings is not None and "" not in strings
                and all(any(lit in s for lit in self.literals) for s in strings))

    def node_holds(self, node):
        return node.holds or any(self.covered(s) for s in (node.exact, node.prefix, node.suffix))

    @staticmethod
    def chars(items):
        found = set()
        for op, av in items:
            if op is sre.LITERAL:
                found.add(chr(av).lower())
            elif op is sre.RANGE and av[1] - av[0] < 10:
                found.update(chr(c).lower() for c in range(av[0], av[1] + 1))
            else:
                return None
        return frozenset(found) if len(found) <= 10 else None

    def node(self, op, av):
        if op is sre.LITERAL:
            return _Node(exact=frozenset({chr(av).lower()}))
        if op is sre.IN:
            chars = self.chars(av)
            return _Node(exact=chars) if chars else _Node()
        if op in (sre.AT, sre.ASSERT_NOT):  # zero-width; a negative lookaround requires nothing
            return _Node(exact=UNKNOWN)
        if op is sre.ASSERT:  # zero-width, but the text around must hold what it looks for
            return _Node(exact=UNKNOWN, holds=self.node_holds(self.sequence(av[1])))
        if op is sre.SUBPATTERN:
            return self.sequence(av[-1])
        if op is sre.BRANCH:
            branches = [self.sequence(b) for b in av[1]]
            holds = all(self.node_holds(b) for b in branches)
            if all(b.exact is not None for b in branches):
                exact = frozenset().union(*(b.exact for b in branches))
                if len(exact) <= MAX_SET:
                    return _Node(exact=exact, holds=holds)
            return _Node(prefix=frozenset().union(*(b.prefix for b in branches)),
                         suffix=frozenset().union(*(b.suffix for b in branches)), holds=holds)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, body = av
            inner = self.sequence(body)
            if low == 0:
                if high == 1 and inner.exact is not None:
                    return _Node(exact=inner.exact | UNKNOWN)
                return _Node()
            if low == high and inner.exact is not None:
                exact = inner.exact
                for _repeat in range(low - 1):
                    exact = exact and _product(exact, inner.exact)
                if exact is not None:
                    return _Node(exact=exact, holds=self.node_holds(inner))
            return _Node(prefix=inner.prefix, suffix=inner.suffix, holds=self.node_holds(inner))
        return _Node()  # any other byte, class or category: nothing known

    def sequence(self, items):
        holds, run, prefix, whole = False, UNKNOWN, None, True
        for op, av in items:
            node = self.node(op, av)
            holds = holds or node.holds
            if node.exact is not None:
                joined = _product(run, node.exact)
                if joined is None:  # too many strings: keep what is proved, start again
                    holds = holds or self.covered(run)
                    prefix = run if prefix is None else prefix
                    whole, joined = False, node.exact
                run = joined
            else:
                head = _product_of_prefixes(run, node.prefix)
                holds = holds or self.covered(head)
                prefix = head if prefix is None else prefix
                whole, run = False, node.suffix
        holds = holds or self.covered(run)
        if whole:
            return _Node(exact=run, holds=holds)
        return _Node(prefix=prefix, suffix=run, holds=holds)


def implies(regex, literals):
    """True when every match of regex is proved to need one of literals in its text."""
    prover = _Prover(literals)
    return prover.node_holds(prover.sequence(sre_parse.parse(regex, re.ASCII)))


WITH_LITERALS = [e for e in ENTRIES if e.get("literals")]


def test_the_proof_accepts_only_what_is_required():
    assert implies(r"\bvpc-[0-9a-f]{8}\b", ["vpc-"])
    assert implies(r"(?i:secret[_-]?key)", ["SECRET"])
    assert implies(r"x(?=[0-9]+abc)", ["abc"])
    assert implies(r"(?:ab|cb)c", ["bc"])
    assert implies(r"(?:10|172)\.[0-9]+", ["10.", "172."])
    assert implies(r"(?:(?=abc)|(?<=xabd))[0-9]", ["ab"])
    assert not implies(r"(?:(?=abc)|(?<=bd))[0-9]", ["ab"])
    assert not implies(r"\bvpc-[0-9a-f]{8}\b", ["subnet-"])
    assert not implies(r"(?:ab|cd)e", ["ab"])
    assert not implies(r"x(?!abc)", ["abc"])
    assert not implies(r"(?:abc)?d", ["abc"])
    assert not implies(r"a[^x]*b", ["ab"])
    assert not implies(r"(?:abc){0,3}d", ["abc"])


@pytest.mark.parametrize("entry", WITH_LITERALS, ids=[e["name"] for e in WITH_LITERALS])
def test_declared_literals_are_required_by_the_regex(entry):
    literals = entry["literals"]
    assert isinstance(literals, list) and literals
    assert all(isinstance(lit, str) and lit for lit in literals)
    assert implies(entry["regex"], literals), (
        f"{entry['name']}: the regex does not prove that a match needs one of {literals}")
    # the proof can fail on this very regex: a literal it does not hold is refused
    assert not implies(entry["regex"], ["\x00never"])


@pytest.mark.parametrize("entry", WITH_LITERALS, ids=[e["name"] for e in WITH_LITERALS])
def test_every_example_holds_a_literal(entry):
    for example in entry["examples"]:
        assert any(lit.lower() in example.lower() for lit in entry["literals"]), example


def test_every_entry_has_literals():
    # engines run an entry without literals on every text; none is needed today
    assert [e["name"] for e in ENTRIES if not e.get("literals")] == []


def test_the_corpus_matches_of_every_entry_hold_a_literal():
    texts = []
    for part in ("real", "negative"):
        folder = os.path.join(CORPUS, part)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".expect.json"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    texts.append(handle.read())
    if not texts:
        pytest.skip(f"no corpus under {CORPUS}")
    catalog = engine.Catalog.from_data({"patterns": ENTRIES})
    seen = 0
    for pattern, entry in zip(catalog.patterns, ENTRIES):
        for text in texts:
            for line in text.splitlines():
                if pattern.compiled.search(line):
                    seen += 1
                    assert any(lit.lower() in line.lower() for lit in entry["literals"]), (
                        pattern.name, line)
    assert seen > 500
