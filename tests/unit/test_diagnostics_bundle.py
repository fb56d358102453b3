"""The diagnostics bundle on a log directory, configs and secrets of its own in tmp_path.

Every corpus file (with its context) and a set of secrets go into the logs and configurations
the module collects; the archive must hold none of the secrets and none of the corpus's
must_mask values, and the masking twin must find nothing left in it.
"""

from __future__ import annotations

import json
import re
import tarfile

import pytest

from tests.conftest import REPO, load_module
from tests.unit.ansible_module import run_module

engine = load_module("aws_masker_engine", REPO / "plugins" / "module_utils" /
                     "aws_masker_engine.py")

REDIS_PASSWORD = "DiagTestRedisPassword0123456789abcdefXYZ"
SCOPE_SECRET = "DiagTestScopeSecret9876543210zyxwvuABCDEF"
API_KEY = "sk-ant-api03-DiagTestKey_0123456789abcdefghijklmnopqrstuvwxyz"
UNFILED_PASSWORD = "an-inline-password-value-42"
BEARER = "diag-bearer-value-5150"
DIR_SECRET = "DiagTestSecretOnlyKnownFromItsDirectory77"


def corpus_texts(corpus):
    return {path: path.read_text(encoding="utf-8")
            for path in sorted((corpus / "real").iterdir())
            if not path.name.endswith(".expect.json")}


def must_mask(expect_path):
    return sorted({item["value"] for item in json.loads(expect_path.read_text())["must_mask"]})


def standing_alone(value, text):
    """Whether ``value`` occurs in ``text`` as a word of its own, not inside a longer name
    (the corpus's "my-function" inside another file's "my-functionRole-HIZXMPLEOM9E")."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(value)}(?![A-Za-z0-9_])", text) is not None


@pytest.fixture
def site(tmp_path, corpus):
    logs = tmp_path / "logs"
    logs.mkdir()
    for path, text in corpus_texts(corpus).items():
        (logs / f"{path.name}.log").write_text(text, encoding="utf-8")
    (logs / "gateway-error.log").write_text(
        f"connect with password {REDIS_PASSWORD}\nscope {SCOPE_SECRET}\n"
        f"x-api-key: {API_KEY}\nAuthorization: Bearer {BEARER}\nother {DIR_SECRET}\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "redis_password").write_text(REDIS_PASSWORD)
    (secrets / "scope_secret").write_text(SCOPE_SECRET)
    (secrets / "canary_secret").write_text(DIR_SECRET)
    (tmp_path / "redis.conf").write_text(f"port 6379\nrequirepass {REDIS_PASSWORD}\n")
    (tmp_path / "masker.json").write_text(json.dumps(
        {"redis": {"password": UNFILED_PASSWORD}, "scope_secret": SCOPE_SECRET}, indent=2))
    return tmp_path


def args(site):
    return {
        "dest": str(site / "bundle.tar.gz"),
        "catalog": str(REPO / "catalog" / "aws_patterns.yml"),
        "log_dir": str(site / "logs"),
        "log_lines": 100000,
        "config_files": [str(site / "redis.conf"), str(site / "masker.json"),
                         str(site / "absent.conf")],
        "secret_files": [str(site / "secrets" / "redis_password"),
                         str(site / "secrets" / "scope_secret")],
        "secret_dirs": [str(site / "secrets")],
        "packages": ["dpkg"],
        "health_urls": {"nothing": "http://127.0.0.1:1/health"},
        "ports": ["127.0.0.1:1"],
    }


def archive_text(path):
    with tarfile.open(path) as archive:
        return {member.name: archive.extractfile(member).read().decode("utf-8")
                for member in archive.getmembers() if member.isfile()}


def test_the_archive_holds_no_secret_and_no_corpus_identifier(site, corpus):
    status, result, output = run_module("diagnostics_bundle", args(site))

    assert status == "SUCCESS", output
    assert result["changed"] is False
    assert oct((site / "bundle.tar.gz").stat().st_mode & 0o777) == "0o600"
    files = archive_text(site / "bundle.tar.gz")
    whole = "\n".join(files.values())
    names = {name.split("/", 1)[1] for name in files}
    assert {"versions.txt", "services.txt", "resources.txt", "health.txt", "network.txt",
            "configs/MISSING.txt", "logs/gateway-error.log", "SANITISED.txt"} <= names
    for secret in (REDIS_PASSWORD, SCOPE_SECRET, API_KEY, UNFILED_PASSWORD, BEARER, DIR_SECRET):
        assert secret not in whole
        assert secret not in output
    # Each file's identifiers, as the corpus scores them: none left in its own log...
    leaked = [(path.name, value) for path in corpus_texts(corpus)
              for value in must_mask(path.with_name(path.name + ".expect.json"))
              if value in files[f"bundle/logs/{path.name}.log"]]
    assert leaked == []
    # ...and, since a value found once is masked everywhere, none standing alone anywhere.
    everywhere = {value for path in corpus_texts(corpus)
                  for value in must_mask(path.with_name(path.name + ".expect.json"))}
    assert [value for value in sorted(everywhere) if standing_alone(value, whole)] == []
    findings = [found.value for found in engine.MaskingEngine().scan(whole)
                if not engine.TOKEN_RE.fullmatch(found.value)]
    assert findings == []
    assert "AWS_EC2_" in whole
    assert sum(result["masked"].values()) > 0
    assert result["redacted"] >= 6
    assert "dpkg " in files["bundle/versions.txt"]


def test_one_value_gets_one_token_across_files(site):
    (site / "logs" / "a.log").write_text("instance i-0abcdef1234567890 started\n")
    (site / "logs" / "b.log").write_text("instance i-0abcdef1234567890 stopped\n")

    run_module("diagnostics_bundle", args(site))

    files = archive_text(site / "bundle.tar.gz")
    token_a = files["bundle/logs/a.log"].split()[1]
    assert token_a.startswith("AWS_EC2_")
    assert files["bundle/logs/b.log"].split()[1] == token_a


def test_check_mode_writes_no_archive(site):
    status, result, output = run_module("diagnostics_bundle", args(site), check=True)

    assert status == "SUCCESS", output
    assert result["changed"] is False
    assert result["dest"] is None
    assert not (site / "bundle.tar.gz").exists()


def test_without_a_catalog_nothing_is_collected(site):
    status, result, _ = run_module("diagnostics_bundle",
                                   dict(args(site), catalog=str(site / "none.json")))

    assert status == "FAILED!"
    assert "cannot be masked" in result["msg"]
    assert not (site / "bundle.tar.gz").exists()
