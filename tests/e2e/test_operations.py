"""The operations playbooks against the deployed stack: validate, restart, rollback, diagnostics.

Each runs through ansible-runner like the deploy; the tests read per-host stats and task events,
not output text. They restart programs and rewrite configurations of the live stack, so they
run under the shared lock with the other e2e tests, and leave the stack as deploy.yml left it.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, corpus_dir, load_module
from tests.e2e.conftest import (
    EDGE_URL,
    HOST,
    failed_tasks,
    http_get,
    run_playbook,
    supervisorctl,
)

engine = load_module("aws_masker_engine", REPO / "plugins" / "module_utils" /
                     "aws_masker_engine.py")

PROGRAMS = ["aws-masking-redis", "aws-masking-mock-upstream", "aws-masking-gateway",
            "aws-masking-edge"]
RELEASES = Path("/var/lib/aws-masking-gateway/releases")
SECRETS = Path("/etc/aws-masking-gateway/secrets")
DEPLOYED = [Path("/etc/aws-masking-gateway/edge/nginx.conf"),
            Path("/etc/aws-masking-gateway/gateway"),
            Path("/etc/aws-masking-gateway/redis/redis.conf"),
            Path("/opt/aws-masking-gateway/lua"),
            *(Path("/etc/supervisor/conf.d") / f"{name}.conf" for name in PROGRAMS)]
LOG_DIR = Path("/var/log/aws-masking-gateway")


def pids():
    return {name: supervisorctl("pid", name).stdout.strip() for name in PROGRAMS}


def changed(result):
    return result.stats["changed"].get(HOST, 0)


def ok_run(result):
    assert result.rc == 0, failed_tasks(result)
    assert result.stats["failures"].get(HOST, 0) == 0
    return result


def deployed_bytes():
    files = {}
    for top in DEPLOYED:
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if path.is_file():
                files[str(path)] = path.read_bytes()
    return files


def restarted_programs(result):
    """Program names of the restart tasks that ran, in the order they ran."""
    return [event["event_data"]["res"]["name"] for event in result.events
            if event.get("event") == "runner_on_ok"
            and event["event_data"].get("task_action") == "community.general.supervisorctl"
            and event["event_data"].get("res", {}).get("changed")]


def test_validate_passes_reads_only_and_reports_the_shared_shape(deployment, tmp_path):
    result = ok_run(run_playbook("validate.yml", tmp_path / "run"))
    checked = ok_run(run_playbook("validate.yml", tmp_path / "check", cmdline="--check"))

    assert changed(result) == 0
    assert changed(checked) == 0
    checks = next(event["event_data"]["res"]["checks"] for event in result.events
                  if event.get("event") == "runner_on_ok"
                  and event["event_data"].get("task_action") == "aws_masking.gateway.config_check")
    assert {check["status"] for check in checks} <= {"pass", "skip"}
    assert all(set(check) == {"name", "status", "evidence", "section", "remedy"}
               for check in checks)
    names = {check["name"] for check in checks}
    assert {"port edge 8085", "port redis 6379", "gateway nginx configuration",
            "Lua plugin syntax", "Redis password strength"} <= names
    password = (SECRETS / "redis_password").read_text().strip()
    assert password not in json.dumps([event.get("event_data") for event in result.events])


def test_restart_check_mode_restarts_nothing_and_one_service_restarts(deployment, tmp_path):
    before = pids()

    checked = ok_run(run_playbook("restart.yml", tmp_path / "check", cmdline="--check"))
    assert changed(checked) == 0
    assert pids() == before

    result = ok_run(run_playbook("restart.yml", tmp_path / "run",
                                 extravars={"restart_service": "gateway"}))
    after = pids()
    assert changed(result) == 1
    assert restarted_programs(result) == ["aws-masking-gateway"]
    assert after["aws-masking-gateway"] != before["aws-masking-gateway"]
    assert {k: v for k, v in after.items() if k != "aws-masking-gateway"} == {
        k: v for k, v in before.items() if k != "aws-masking-gateway"}
    assert http_get(f"{EDGE_URL}/health/deep")[0] == 200


def test_rollback_restores_the_previous_release_byte_for_byte(deployment, tmp_path):
    first = deployed_bytes()
    refused = run_playbook("rollback.yml", tmp_path / "refused")
    assert refused.rc != 0
    assert any("rollback_confirm=true" in failure for failure in failed_tasks(refused))

    try:
        changed_deploy = ok_run(run_playbook("deploy.yml", tmp_path / "deploy-b",
                                             extravars={"gateway_mapping_ttl_seconds": 7200}))
        assert changed(changed_deploy) > 0
        after_b = deployed_bytes()
        assert after_b != first
        manifests = [json.loads(path.read_text()) for path in RELEASES.glob("*/manifest.json")]
        newest = max(manifests, key=lambda manifest: manifest.get("deployed", ""))
        assert str(newest["variables"]["gateway_mapping_ttl_seconds"]) == "7200"

        # Check mode predicts the restore (changed) and touches nothing.
        checked = ok_run(run_playbook("rollback.yml", tmp_path / "check", cmdline="--check",
                                      extravars={"rollback_confirm": True}))
        assert changed(checked) > 0
        assert restarted_programs(checked) == []
        assert deployed_bytes() == after_b

        rolled = ok_run(run_playbook("rollback.yml", tmp_path / "rollback",
                                     extravars={"rollback_confirm": True}))
        assert changed(rolled) > 0
        assert restarted_programs(rolled) == PROGRAMS
        assert deployed_bytes() == first
        status, body = http_get(f"{EDGE_URL}/health/deep")
        assert status == 200, body
        target = next(event["event_data"]["res"]["release"] for event in rolled.events
                      if event.get("event") == "runner_on_ok"
                      and event["event_data"].get("task_action") == "aws_masking.gateway.release"
                      and event["event_data"]["res"].get("files_written") is not None)

        again = ok_run(run_playbook("rollback.yml", tmp_path / "again",
                                    extravars={"rollback_confirm": True,
                                               "rollback_release": target}))
        assert changed(again) == 0
        assert restarted_programs(again) == []
    finally:
        # Whatever happened, the stack is left as deploy.yml with the inventory makes it.
        if deployed_bytes() != first:
            ok_run(run_playbook("deploy.yml", tmp_path / "deploy-a"))


def test_diagnostics_archive_holds_no_secret_and_no_corpus_identifier(deployment, tmp_path):
    texts = {path.name: path.read_text(encoding="utf-8")
             for path in sorted((corpus_dir() / "real").iterdir())
             if not path.name.endswith(".expect.json")}
    planted = ["x-api-key: sk-ant-api03-E2eDiagnosticsKey_0123456789abcdefghijklmnop",
               "Authorization: Bearer e2e-diagnostics-bearer-8086"]
    corpus_log = LOG_DIR / "e2e-diagnostics-corpus.log"
    body = "\n".join(texts.values()) + "\n" + "\n".join(planted) + "\n"
    secrets = [path.read_text().strip() for path in SECRETS.iterdir()]
    body += "".join(f"connecting with {secret}\n" for secret in secrets)
    corpus_log.write_text(body, encoding="utf-8")
    dest = tmp_path / "out"
    try:
        checked = ok_run(run_playbook("diagnostics.yml", tmp_path / "check", cmdline="--check",
                                      extravars={"diagnostics_dest": str(dest)}))
        assert changed(checked) == 0
        assert not dest.exists()
        result = ok_run(run_playbook(
            "diagnostics.yml", tmp_path / "run",
            extravars={"diagnostics_dest": str(dest),
                       "diagnostics_log_lines": body.count("\n") + 10}))
    finally:
        corpus_log.unlink()

    assert changed(result) == 0
    archives = list(dest.glob(f"diagnostics-{HOST}-*.tar.gz"))
    assert len(archives) == 1
    with tarfile.open(archives[0]) as archive:
        files = {member.name.split("/", 1)[1]: archive.extractfile(member).read().decode()
                 for member in archive.getmembers() if member.isfile()}
    whole = "\n".join(files.values())
    assert {"versions.txt", "services.txt", "resources.txt", "health.txt", "network.txt",
            "redis-info.txt", "logs/e2e-diagnostics-corpus.log"} <= set(files)
    assert "redis_version:" in files["redis-info.txt"]
    assert "RUNNING" in files["services.txt"]
    for secret in [*secrets, "sk-ant-api03-E2eDiagnosticsKey", "e2e-diagnostics-bearer-8086"]:
        assert secret not in whole
    values = {item["value"] for path in (corpus_dir() / "real").glob("*.expect.json")
              for item in json.loads(path.read_text())["must_mask"]}
    standing = [value for value in sorted(values)
                if re.search(rf"(?<![A-Za-z0-9_]){re.escape(value)}(?![A-Za-z0-9_])", whole)]
    assert standing == []
    findings = [found.name for found in engine.MaskingEngine().scan(whole)
                if not engine.TOKEN_RE.fullmatch(found.value)]
    assert findings == []


@pytest.fixture(autouse=True)
def _healthy_after(deployment):
    yield
    assert http_get(f"{EDGE_URL}/health")[0] == 200
