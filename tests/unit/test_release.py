"""Release records: what deploy keeps of each release and what rollback restores.

Files and releases live in tmp_path; nothing of the deployed stack is read or written. The
library is driven directly for the details, the module through ``ansible`` for ``changed`` in
normal and check mode.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO, load_module
from tests.unit.ansible_module import run_module

rel = load_module("_release", REPO / "plugins" / "module_utils" / "_release.py")

SECRET = "release-test-secret-value-0123456789abcdef"


@pytest.fixture
def site(tmp_path):
    """A deployed tree: a config holding the secret, a plugin directory, a secret file."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "lua" / "sub").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "redis_password").write_text(SECRET + "\n")
    (tmp_path / "etc" / "redis.conf").write_text(f"port 6379\nrequirepass {SECRET}\n")
    (tmp_path / "lua" / "a.lua").write_text("return 1\n")
    (tmp_path / "lua" / "sub" / "b.lua").write_text("return 2\n")
    os.chmod(tmp_path / "etc" / "redis.conf", 0o640)
    return tmp_path


def args(site, action, **extra):
    values = {
        "action": action,
        "releases_dir": str(site / "releases"),
        "paths": [str(site / "etc" / "redis.conf"), str(site / "lua"), str(site / "absent")],
        "variables": {"gateway_mapping_ttl_seconds": 86400},
        "secret_files": {"redis_password": str(site / "secrets" / "redis_password")},
        "keep": 3,
        "collection_version": "0.1.0",
    }
    values.update(extra)
    return values


def tree(site):
    return {str(path.relative_to(site)): path.read_bytes()
            for path in sorted((site / "etc").rglob("*")) + sorted((site / "lua").rglob("*"))
            if path.is_file()}


def releases(site):
    return rel.Releases(str(site / "releases"))


def record(site, keep=3):
    store = releases(site)
    secrets = rel.read_secrets({"redis_password": str(site / "secrets" / "redis_password")})
    paths = [str(site / "etc" / "redis.conf"), str(site / "lua")]
    return store.record(paths, [], {}, secrets, {}, keep, check_mode=False)


def test_a_release_holds_the_files_without_the_secret(site):
    result, changed = record(site)

    assert changed and result["created"]
    folder = site / "releases" / result["release"]
    stored = (folder / "files" / str(site / "etc" / "redis.conf").lstrip("/")).read_bytes()
    assert SECRET.encode() not in stored
    assert b"requirepass @@AWS_MASKING_SECRET:redis_password@@" in stored
    manifest = json.loads((folder / "manifest.json").read_text())
    assert SECRET not in json.dumps(manifest)
    assert manifest["files"][str(site / "etc" / "redis.conf")]["mode"] == "0640"
    assert sorted(manifest["files"]) == sorted(
        [str(site / "etc" / "redis.conf"), str(site / "lua" / "a.lua"),
         str(site / "lua" / "sub" / "b.lua")])
    assert oct(os.stat(site / "releases").st_mode & 0o777) == "0o700"


def test_an_unchanged_state_is_not_recorded_again(site):
    first, _ = record(site)
    second, changed = record(site)

    assert not changed
    assert second["release"] == first["release"]
    assert releases(site).ids() == [first["release"]]


def test_only_the_newest_releases_are_kept(site):
    made = []
    for number in range(4):
        (site / "lua" / "a.lua").write_text(f"return {number}\n")
        made.append(record(site, keep=3)[0]["release"])

    assert releases(site).ids() == made[1:]


def test_restore_puts_back_the_recorded_bytes_and_removes_new_files(site):
    before = tree(site)
    first, _ = record(site)
    (site / "etc" / "redis.conf").write_text(f"port 6380\nrequirepass {SECRET}\n")
    os.chmod(site / "etc" / "redis.conf", 0o644)
    (site / "lua" / "new.lua").write_text("return 3\n")
    store = releases(site)
    secrets = rel.read_secrets({"redis_password": str(site / "secrets" / "redis_password")})

    manifest, write, remove, packages = store.plan_restore(first["release"], secrets)
    store.restore_files(first["release"], manifest, write, remove, secrets)

    assert write == [str(site / "etc" / "redis.conf")]
    assert remove == [str(site / "lua" / "new.lua")]
    assert packages == {}
    assert tree(site) == before
    assert oct(os.stat(site / "etc" / "redis.conf").st_mode & 0o777) == "0o640"
    assert store.plan_restore(first["release"], secrets)[1:] == ([], [], {})


def test_a_damaged_release_is_refused_before_any_file_is_written(site):
    first, _ = record(site)
    # Files are written in path order: redis.conf (intact copy) would come before a.lua.
    stored = site / "releases" / first["release"] / "files" / str(
        site / "lua" / "a.lua").lstrip("/")
    stored.write_text("return 'damaged'\n")
    (site / "etc" / "redis.conf").write_text("port 2\n")
    (site / "lua" / "a.lua").write_text("return 99\n")
    store = releases(site)
    secrets = rel.read_secrets({"redis_password": str(site / "secrets" / "redis_password")})
    manifest, write, remove, _ = store.plan_restore(first["release"], secrets)
    assert write == [str(site / "etc" / "redis.conf"), str(site / "lua" / "a.lua")]

    with pytest.raises(rel.ReleaseError, match="damaged"):
        store.restore_files(first["release"], manifest, write, remove, secrets)
    assert (site / "etc" / "redis.conf").read_text() == "port 2\n"
    assert (site / "lua" / "a.lua").read_text() == "return 99\n"


def test_previous_needs_two_releases(site):
    record(site)

    with pytest.raises(rel.ReleaseError, match="needs two"):
        releases(site).previous()


def test_installed_package_versions_are_read_from_dpkg():
    versions = rel.package_versions(["dpkg", "surely-not-an-installed-package"])

    assert list(versions) == ["dpkg"]
    assert versions["dpkg"][0].isdigit()


def test_module_record_reports_changed_in_normal_and_check_mode(site):
    status, result, output = run_module("release", args(site, "record"), check=True)
    assert status == "CHANGED", output
    assert result["created"] is True
    assert not (site / "releases").exists()

    status, result, output = run_module("release", args(site, "record"))
    assert status == "CHANGED", output
    assert result["releases"] == [result["release"]]

    status, again, output = run_module("release", args(site, "record"))
    assert status == "SUCCESS", output
    assert again["release"] == result["release"]
    status, _, output = run_module("release", args(site, "record"), check=True)
    assert status == "SUCCESS", output
    assert SECRET not in output


def test_module_restore_reports_changed_in_normal_and_check_mode(site):
    before = tree(site)
    _, first, _ = run_module("release", args(site, "record"))
    (site / "lua" / "a.lua").write_text("return 10\n")
    run_module("release", args(site, "record"))
    changed = tree(site)

    status, planned, output = run_module("release", args(site, "restore"), check=True)
    assert status == "CHANGED", output
    assert planned["release"] == first["release"]
    assert planned["files_written"] == [str(site / "lua" / "a.lua")]
    assert tree(site) == changed

    status, _, output = run_module("release", args(site, "restore"))
    assert status == "CHANGED", output
    assert tree(site) == before
    status, _, output = run_module("release", args(site, "restore", release=first["release"]))
    assert status == "SUCCESS", output


def test_module_restore_of_an_unknown_release_fails_clearly(site):
    run_module("release", args(site, "record"))

    status, result, output = run_module("release", args(site, "restore", release="nope"))

    assert status == "FAILED!", output
    assert "no release 'nope'" in result["msg"]


def test_a_redeployed_older_state_becomes_the_newest_release(site):
    first, _ = record(site)
    (site / "lua" / "a.lua").write_text("return 10\n")
    second, _ = record(site)
    (site / "lua" / "a.lua").write_text("return 1\n")
    store = releases(site)
    secrets = rel.read_secrets({"redis_password": str(site / "secrets" / "redis_password")})
    paths = [str(site / "etc" / "redis.conf"), str(site / "lua")]

    kept, changed = store.record(paths, [], {}, secrets, {}, 3, check_mode=False, promote=False)
    assert (kept["release"], changed) == (first["release"], False)
    assert store.ids() == [first["release"], second["release"]]

    promoted, changed = store.record(paths, [], {}, secrets, {}, 3, check_mode=False)
    assert (promoted["release"], promoted["created"], changed) == (first["release"], False, True)
    assert store.ids() == [second["release"], first["release"]]
    assert store.previous() == second["release"]


def test_every_file_of_a_secret_directory_is_kept_out(site):
    other = "release-test-directory-secret-abcdef012345"
    (site / "secrets" / "canary_secret").write_text(other)
    (site / "etc" / "masker.json").write_text(f'{{"canary": "{other}"}}')

    status, result, output = run_module("release", args(
        site, "record", paths=[str(site / "etc")], secret_dirs=[str(site / "secrets")]))

    assert status == "CHANGED", output
    manifest = json.loads((site / "releases" / result["release"] / "manifest.json").read_text())
    assert manifest["secrets"] == ["canary_secret", "redis_password"]
    stored = site / "releases" / result["release"] / "files"
    assert all(other.encode() not in path.read_bytes()
               for path in stored.rglob("*") if path.is_file())


def test_a_package_version_no_source_offers_is_named():
    installed = rel.package_versions(["dpkg"])["dpkg"]

    missing = rel.unavailable_packages({"dpkg": "0.0.0-no-such-version"})
    offered = rel.unavailable_packages({"dpkg": installed})

    assert missing == ["dpkg=0.0.0-no-such-version"]
    assert offered == []
