"""scripts/aws-mask: exit codes, output formats, and that scan never shows a value."""

import json
import os
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "aws-mask")

SECRETS = ["i-0a1b2c3d4e5f67890", "123456789012", "10.0.1.5", "AKIAIOSFODNN7EXAMPLE",
           "arn:aws:iam::123456789012:role/Admin"]
DIRTY = ("Instance i-0a1b2c3d4e5f67890 at 10.0.1.5 assumed arn:aws:iam::123456789012:role/Admin\n"
         "key AKIAIOSFODNN7EXAMPLE, again i-0a1b2c3d4e5f67890\r\n")
CLEAN = "git log 9f1c2e7d3b4a5968f0e1d2c3b4a59687f0e1d2c3, version 1.6.12.2, 127.0.0.1\n"


def run(*args, stdin=None):
    return subprocess.run([sys.executable, SCRIPT, *args], input=stdin, capture_output=True,
                          text=True, check=False)


@pytest.fixture
def files(tmp_path):
    dirty, clean = tmp_path / "dirty.txt", tmp_path / "clean.txt"
    dirty.write_bytes(DIRTY.encode())
    clean.write_bytes(CLEAN.encode())
    return str(dirty), str(clean)


def test_script_is_executable():
    assert os.stat(SCRIPT).st_mode & stat.S_IXUSR
    with open(SCRIPT, encoding="utf-8") as handle:
        assert handle.readline().startswith("#!/usr/bin/env python3")


def test_scan_reports_counts_and_exits_1_when_found(files):
    dirty, clean = files
    result = run("scan", dirty, clean)
    assert result.returncode == 1
    assert "dirty.txt: 5 found" in result.stdout
    assert "ec2_instance_id=2" in result.stdout
    assert "clean.txt: clean" in result.stdout
    for value in SECRETS:
        assert value not in result.stdout + result.stderr


def test_scan_exits_0_on_clean_input(files):
    result = run("scan", files[1])
    assert (result.returncode, result.stdout.strip()) == (0, files[1] + ": clean")


def test_scan_json_from_stdin(files):
    result = run("scan", "--json", stdin=DIRTY)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["total"] == 5
    assert report["counts"] == {"arn": 1, "access_key_id": 1, "ec2_instance_id": 2,
                                "private_ipv4": 1}
    assert report["files"][0]["path"] == "-"
    for value in SECRETS:
        assert value not in result.stdout


def test_mask_writes_tokens_and_keeps_everything_else(files, tmp_path):
    out = tmp_path / "masked.txt"
    result = run("mask", files[0], "-o", str(out))
    assert result.returncode == 0, result.stderr
    masked = out.read_bytes().decode()
    for value in SECRETS:
        assert value not in masked
    assert masked.count("AWS_EC2_000001") == 2, "one token per original"
    assert masked.endswith(", again AWS_EC2_000001\r\n"), "line endings stay as they were"
    assert run("scan", str(out)).returncode == 1, "tokens themselves look like tokens"


def test_mask_stdin_to_stdout_and_clean_text_is_unchanged():
    result = run("mask", stdin=CLEAN)
    assert (result.returncode, result.stdout) == (0, CLEAN)


def test_mask_several_files_needs_an_output_dir(files, tmp_path):
    assert run("mask", *files).returncode == 2
    target = tmp_path / "out"
    result = run("mask", "--output-dir", str(target), "--json", *files)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [f["total"] for f in summary["files"]] == [5, 0]
    assert (target / "clean.txt").read_text() == CLEAN
    assert "AWS_ACCESS_KEY_000001" in (target / "dirty.txt").read_text()


def test_mapping_file_is_private_and_unmask_restores(files, tmp_path):
    mapping, masked, restored = (tmp_path / n for n in ("map.json", "m.txt", "r.txt"))
    assert run("mask", files[0], "-o", str(masked), "--mapping-file", str(mapping)).returncode == 0
    assert stat.S_IMODE(os.stat(str(mapping)).st_mode) == 0o600
    assert json.loads(mapping.read_text())["AWS_EC2_000001"] == "i-0a1b2c3d4e5f67890"
    result = run("unmask", str(masked), "--mapping-file", str(mapping), "-o", str(restored))
    assert result.returncode == 0, result.stderr
    assert restored.read_bytes() == DIRTY.encode()


def test_missing_file_is_an_error_without_traceback(tmp_path):
    result = run("scan", str(tmp_path / "absent.txt"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "absent.txt" in result.stderr


def test_bad_catalog_is_reported(tmp_path):
    catalog = tmp_path / "catalog.yml"
    catalog.write_text("version: 1\npatterns:\n  - {name: x, token: bad code, regex: x}\n")
    result = run("--catalog", str(catalog), "scan", stdin="x")
    assert result.returncode == 2
    assert "token code" in result.stderr


def test_scan_finds_an_account_named_in_a_sentence():
    result = run("scan", stdin="Our account is 493827165012, see 493827165012 again\n")
    assert result.returncode == 1, result.stdout
    assert "account_id_stated=2" in result.stdout and "493827165012" not in result.stdout


def test_mask_replaces_every_occurrence_of_an_original():
    result = run("mask", stdin="per 493827165012, account 493827165012\n")
    assert (result.returncode, result.stdout) == (0, "per AWS_ACCOUNT_000001, "
                                                     "account AWS_ACCOUNT_000001\n")
