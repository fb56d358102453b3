"""Each role's argument spec against its defaults and its README.

A role reads its variables from defaults/main.yml; ansible-doc and the validation that runs when
the role starts read meta/argument_specs.yml. These tests keep the two in step: the same names,
the same defaults (a templated default is compared as the string it is written as, since
ansible-doc shows it unevaluated), types that fit the values, a description for every option,
and no secret behind a default. Every entry point (service_manager's "program" and "port_free"
too) is loaded with the role's defaults/main.yml, because no caller passes defaults_from.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = sorted(path.name for path in ROLES_DIR.iterdir() if path.is_dir())

# The option types a value of each Python type may be declared as.
SPEC_TYPES_OF = {bool: {"bool"}, int: {"int"}, float: {"float"}, list: {"list"}, dict: {"dict"}}
STRING_TYPES = {"str", "path"}
KNOWN_TYPES = {"str", "path", "int", "float", "bool", "list", "dict", "raw"}
# A value ansible-doc cannot evaluate: the option's type describes what it renders to.
TEMPLATED = re.compile(r"\{\{|\{%")
# A default that names where a secret comes from, without holding one.
SECRET_REFERENCE = re.compile(r"\{\{[^{}]*\}\}", re.DOTALL)
SECRET_NAME = re.compile(r"_(password|secret)$")


def _load_yaml(path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _defaults(role):
    return _load_yaml(ROLES_DIR / role / "defaults" / "main.yml") or {}


def _entry_points(role):
    return _load_yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")["argument_specs"]


ENTRY_POINTS = [
    pytest.param(role, entry, id=f"{role}/{entry}")
    for role in ROLES
    for entry in _entry_points(role)
]


def _same(left, right):
    """Equal values of equal types all the way down (True is not 1, "8010" is not 8010)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same(left[key], right[key]) for key in left)
    return left == right


def _type_problems(name, option, value):
    declared = option.get("type", "str")
    if declared not in KNOWN_TYPES:
        return [f"{name}: unknown type {declared!r}"]
    if isinstance(value, str):
        if TEMPLATED.search(value):
            return []
        if declared not in STRING_TYPES:
            return [f"{name}: type {declared} for the string {value!r}"]
        if value.startswith("/") and declared != "path":
            return [f"{name}: type {declared} for the absolute path {value!r}; use path"]
        return []
    allowed = SPEC_TYPES_OF.get(type(value), set())
    if declared not in allowed:
        return [f"{name}: type {declared} for the {type(value).__name__} {value!r}"]
    if isinstance(value, list):
        elements = option.get("elements")
        if elements is None:
            return [f"{name}: a list without elements:"]
        return [
            problem
            for item in value
            for problem in _type_problems(f"{name}[]", {"type": elements}, item)
        ]
    return []


@pytest.mark.parametrize("role", ROLES)
def test_role_has_one_defaults_file_and_a_spec_with_main(role):
    defaults_files = sorted(path.name for path in (ROLES_DIR / role / "defaults").iterdir())

    assert defaults_files == ["main.yml"], f"{role}: defaults/ holds {defaults_files}"
    assert "main" in _entry_points(role), f"{role}: no main entry point"


@pytest.mark.parametrize("role", ROLES)
def test_spec_and_defaults_name_the_same_variables(role):
    defaults = set(_defaults(role))
    documented = {name for entry in _entry_points(role).values() for name in entry["options"]}

    assert sorted(defaults - documented) == [], f"{role}: in defaults/main.yml only"
    assert sorted(documented - defaults) == [], f"{role}: in meta/argument_specs.yml only"


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_spec_defaults_are_the_role_defaults(role, entry):
    defaults = _defaults(role)
    options = _entry_points(role)[entry]["options"]

    problems = [
        f"{name}: spec default {option.get('default')!r}, defaults/main.yml {defaults[name]!r}"
        for name, option in options.items()
        if name in defaults
        and ("default" not in option or not _same(option["default"], defaults[name]))
    ]

    assert problems == []


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_spec_types_fit_the_default_values(role, entry):
    defaults = _defaults(role)
    options = _entry_points(role)[entry]["options"]

    problems = [
        problem
        for name, option in options.items()
        if name in defaults
        for problem in _type_problems(name, option, defaults[name])
    ]

    assert problems == []


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_every_option_is_described(role, entry):
    options = _entry_points(role)[entry]["options"]

    undescribed = []
    for name, option in options.items():
        description = option.get("description")
        lines = [description] if isinstance(description, str) else description or []
        if not lines or not all(isinstance(line, str) and line.strip() for line in lines):
            undescribed.append(name)

    assert undescribed == []


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_templated_defaults_are_explained_in_words(role, entry):
    options = _entry_points(role)[entry]["options"]

    unexplained = [
        name
        for name, option in options.items()
        if isinstance(option.get("default"), str)
        and TEMPLATED.search(option["default"])
        and "default" not in str(option.get("description", "")).lower()
    ]

    assert unexplained == []


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_defaults_are_among_the_choices(role, entry):
    options = _entry_points(role)[entry]["options"]

    outside = [
        f"{name}: {option['default']!r} not in {option['choices']}"
        for name, option in options.items()
        if "choices" in option
        and not (isinstance(option.get("default"), str) and TEMPLATED.search(option["default"]))
        and option.get("default") not in option["choices"]
    ]

    assert outside == []


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_secrets_are_no_log_and_default_to_nothing(role, entry):
    options = _entry_points(role)[entry]["options"]

    problems = [
        f"{name}: no_log missing"
        for name, option in options.items()
        if SECRET_NAME.search(name) and option.get("no_log") is not True
    ]
    problems += [
        f'{name}: a no_log default must be "" or a reference to another variable'
        for name, option in options.items()
        if option.get("no_log")
        and not (
            option.get("default") == ""
            or (
                isinstance(option.get("default"), str)
                and SECRET_REFERENCE.fullmatch(option["default"].strip())
            )
        )
    ]

    assert problems == []


@pytest.mark.parametrize("role", ROLES)
def test_an_option_reads_the_same_in_every_entry_point(role):
    seen = {}
    differing = []
    for entry, spec in _entry_points(role).items():
        for name, option in spec["options"].items():
            first_entry, first_option = seen.setdefault(name, (entry, option))
            if not _same(option, first_option):
                differing.append(f"{name}: {first_entry} and {entry}")

    assert differing == []


# ---------------------------------------------------------------- README variable tables


def _variable_table(role):
    """Rows of the README's table whose first column is "variable", or None without one."""
    readme = ROLES_DIR / role / "README.md"
    if not readme.is_file():
        return None
    rows = None
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|"):
            if rows is not None:
                return rows
            continue
        if rows is None:
            if cells[0].lower() == "variable":
                rows = []
        elif not set(cells[0]) <= set("-: "):
            rows.append(cells)
    return rows


def _as_written(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


README_TABLES = [role for role in ROLES if _variable_table(role) is not None]


@pytest.mark.parametrize("role", README_TABLES)
def test_readme_table_lists_the_variables_with_their_defaults(role):
    defaults = _defaults(role)
    rows = _variable_table(role)
    listed = {row[0].strip("`"): row[1] for row in rows}

    assert sorted(set(defaults) - set(listed)) == [], f"{role}: missing from the README table"
    assert sorted(set(listed) - set(defaults)) == [], f"{role}: in the README table only"
    # The default column opens with the value in a code span; words may follow it.
    wrong = [
        f"{name}: README {listed[name]!r}, defaults/main.yml {defaults[name]!r}"
        for name in defaults
        if not listed[name].startswith(f"`{_as_written(defaults[name])}`")
    ]

    assert wrong == []
