"""docs/TROUBLESHOOTING.md has a section for every guide section a check can name.

A failing check of verify, health or validate prints a section such as
"4. Redis Issues / Redis Connection Refused": each part is a heading of the document, nested
in that order, so the reader lands on the section that explains the check and its remedy.
"""

import re

import pytest

from tests.conftest import REPO, load_module

DOC = REPO / "docs" / "TROUBLESHOOTING.md"
checks = load_module("_checks", REPO / "plugins" / "module_utils" / "_checks.py")


def headings():
    """(level, title) of every Markdown heading, in document order (code blocks skipped)."""
    found, fenced = [], False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{1,6}) (.+)", line)):
            found.append((len(match.group(1)), match.group(2).strip()))
    return found


def nested(parts):
    """Whether the parts are headings, each one under the one before it."""
    doc = headings()
    for start, (level, title) in enumerate(doc):
        if title != parts[0]:
            continue
        current, remaining = level, list(parts[1:])
        for deeper, deeper_title in doc[start + 1:]:
            if not remaining:
                break
            if deeper <= level:
                break
            if deeper > current and deeper_title == remaining[0]:
                current = deeper
                remaining.pop(0)
        if not remaining:
            return True
    return False


@pytest.mark.parametrize("key", sorted(checks.SECTIONS))
def test_every_section_a_check_names_is_a_nested_heading(key):
    parts = [part.strip() for part in checks.SECTIONS[key].split(" / ")]
    assert nested(parts), f"{key}: {' > '.join(parts)} is not a heading path of {DOC.name}"


def test_the_nesting_check_rejects_a_path_in_the_wrong_order():
    assert nested(["4. Redis Issues", "Redis Connection Refused"])
    assert not nested(["Redis Connection Refused", "4. Redis Issues"])
    assert not nested(["4. Redis Issues", "Port Conflicts"])


def test_every_playbook_the_document_names_exists():
    named = set(re.findall(r"playbooks/([a-z_]+\.yml)", DOC.read_text(encoding="utf-8")))
    assert named
    assert sorted(name for name in named if not (REPO / "playbooks" / name).exists()) == []
