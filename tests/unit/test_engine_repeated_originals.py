"""The twin masks every occurrence of a value the catalog found, like the gateway does.

A value found only from its context ("account 493827165012") must not pass in clear where the
same text repeats it without that context. The rule is the Lua engine's (aws_masker.repeats);
tests/lua/test_engine_parity.py holds the two equal on the corpus.
"""

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
import aws_masker_engine as engine

MASKING = engine.default_engine()


def mask(text):
    return MASKING.mask_text(text, engine.InMemoryTokenizer())


def test_original_is_masked_before_and_after_its_context():
    text = "The trail saw 493827165012 wide per account 493827165012."

    assert mask(text) == "The trail saw AWS_ACCOUNT_000001 wide per account AWS_ACCOUNT_000001."


def test_leak_reported_by_the_user_is_closed():
    text = "The CloudTrail accountId is 493827165012 per account 493827165012."

    assert "493827165012" not in mask(text)


@pytest.mark.parametrize("text", [
    "Our account is 493827165012",
    "account: 4938-2716-5012",
    "account ID 493827165012",
    "accountId is 493827165012",
    "AWS account 493827165012",
    "the account number was `493827165012`",
])
def test_account_named_in_prose_is_found(text):
    assert [m.token_code for m in MASKING.scan(text)] == ["ACCOUNT"]


@pytest.mark.parametrize("text", [
    "account is 1234567890123",
    "the account is active since 493827165012",
    "order 493827165012 shipped",
])
def test_numbers_without_an_account_context_stay(text):
    assert mask(text) == text


@pytest.mark.parametrize("neighbour", [
    "4938271650123", "x493827165012", "493827165012_a", "493827165012.5", "7.493827165012",
])
def test_occurrence_inside_a_longer_word_stays(neighbour):
    text = f"account 493827165012 vs {neighbour}"

    assert mask(text) == f"account AWS_ACCOUNT_000001 vs {neighbour}"


@pytest.mark.parametrize("around", ["({})", '"{}"', "{}.", "{}-old", "{},x", "\t{}\n", "é{}é"])
def test_occurrence_between_separators_is_masked(around):
    text = "account 493827165012 and " + around.format("493827165012")

    assert mask(text) == "account AWS_ACCOUNT_000001 and " + around.format("AWS_ACCOUNT_000001")


def test_ip_boundaries_follow_the_dot_digit_rule():
    found = [engine.Match(0, 8, "private_ipv4", "PRIVATE_IP", "10.0.0.1")]
    text = "10.0.0.1 10.0.0.1.5 5.10.0.0.1 10.0.0.1. done"

    spans = [(m.start, m.end) for m in engine.repeated_originals(text, found)]

    assert spans == [(0, 8), (31, 39)]


def test_catalog_matches_win_over_overlapping_repeats():
    text = "account 123456789012 role arn:aws:iam::123456789012:role/Admin and 123456789012"

    assert mask(text) == "account AWS_ACCOUNT_000001 role AWS_ARN_000001 and AWS_ACCOUNT_000001"


def test_longer_original_wins_at_the_same_offset_and_leftmost_first():
    first = engine.Match(0, 8, "private_ipv4", "PRIVATE_IP", "10.0.0.1")
    longer = engine.Match(0, 13, "x", "X", "10.0.0.1:8080")
    originals = {"10.0.0.1": first, "10.0.0.1:8080": longer}

    found = engine.repeated_originals("at 10.0.0.1:8080 or 10.0.0.1", [], originals)

    expected = [(3, 16, "X"), (20, 28, "PRIVATE_IP")]
    assert [(m.start, m.end, m.token_code) for m in found] == expected


def test_repeats_take_the_token_of_the_first_finding_and_count():
    masked, counts = MASKING.mask_with_report("account 493827165012; owner 493827165012, "
                                              "493827165012")

    assert masked == ("account AWS_ACCOUNT_000001; owner AWS_ACCOUNT_000001, "
                      "AWS_ACCOUNT_000001")
    assert sum(counts.values()) == 3


def test_text_without_a_finding_is_returned_as_it_is():
    assert engine.repeated_originals("493827165012", []) == []
    assert MASKING.scan("no identifiers here") == []


def test_masked_text_restores_to_the_original():
    text = "account 493827165012 then 493827165012 and i-0a1b2c3d, i-0a1b2c3d"
    tokenizer = engine.InMemoryTokenizer()

    assert MASKING.unmask_text(MASKING.mask_text(text, tokenizer), tokenizer) == text
