"""Break the live stack, run verify, and read the guide section it names; then repair it.

Each fault is made the way it happens in operation (a program stopped, a file changed on the
host, a port held by another process) and repaired by undoing exactly that, not by a redeploy.
verify's JSON report, written on the controller, tells which check failed and which section of
the troubleshooting guide it points at.
"""

import contextlib
import json
import socket
from pathlib import Path

import pytest

from tests.conftest import collection_module_utils
from tests.e2e.conftest import (
    EDGE_URL,
    HOST,
    failed_tasks,
    http_get,
    run_playbook,
    supervisorctl,
    wait_for,
)

SECTIONS = collection_module_utils("_checks").SECTIONS
MASKER_CONFIG = Path("/etc/aws-masking-gateway/gateway/masker.json")
EDGE_CONFIG = Path("/etc/aws-masking-gateway/edge/nginx.conf")
PLUGIN_FILE = Path("/opt/aws-masking-gateway/lua/aws_masker/sse.lua")
GATEWAY_PORT = 8010


def verify(tmp_path, quick=False):
    """Runs verify; returns (runner result, {check name: check}) of this host."""
    run = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    run.mkdir()
    reports = run / "reports"
    result = run_playbook("verify.yml", run, extravars={
        "verify_quick": quick, "verify_report_dir": str(reports)})
    document = json.loads((reports / "verify.json").read_text())
    checks = {item["name"]: item for item in document["hosts"][HOST]["checks"]}
    return result, checks


def failing(checks):
    return {name: item["section"] for name, item in checks.items() if item["status"] == "fail"}


def assert_passes(tmp_path, quick=False):
    result, checks = verify(tmp_path, quick=quick)
    assert result.rc == 0, (failing(checks), failed_tasks(result))
    assert failing(checks) == {}


def gateway_healthy():
    return http_get(f"{EDGE_URL}/health/deep")[0] == 200


@contextlib.contextmanager
def stopped(program):
    assert supervisorctl("stop", program).returncode == 0
    try:
        yield
    finally:
        supervisorctl("start", program)


@contextlib.contextmanager
def rewritten(path, change):
    original = path.read_bytes()
    path.write_bytes(change(original))
    try:
        yield
    finally:
        path.write_bytes(original)


def reload_gateway():
    assert supervisorctl("signal", "HUP", "aws-masking-gateway").returncode == 0


def test_redis_stopped_names_redis_connection_refused(deployment, tmp_path):
    with stopped("aws-masking-redis"):
        result, checks = verify(tmp_path, quick=True)

        assert result.rc != 0
        assert failing(checks)["redis_ping"] == SECTIONS["redis_connection"]
        assert failing(checks)["gateway_status"] == SECTIONS["redis_connection"]
    assert wait_for(gateway_healthy)
    assert_passes(tmp_path, quick=True)


def test_wrong_redis_password_in_the_gateway_names_redis_connection(deployment, tmp_path):
    def wrong_password(raw):
        config = json.loads(raw)
        config["redis"]["password"] = "not-the-redis-password"
        return json.dumps(config).encode()

    try:
        with rewritten(MASKER_CONFIG, wrong_password):
            reload_gateway()
            assert wait_for(lambda: http_get(f"{EDGE_URL}/health/deep")[0] == 503)
            result, checks = verify(tmp_path)

            assert result.rc != 0
            assert checks["redis_ping"]["status"] == "pass"  # Redis itself is fine
            assert failing(checks)["gateway_redis"] == SECTIONS["redis_connection"]
            assert "authenticate" in checks["gateway_redis"]["evidence"]
            assert "not-the-redis-password" not in json.dumps(checks)
    finally:
        reload_gateway()
    assert wait_for(gateway_healthy)
    assert_passes(tmp_path, quick=True)


def test_gateway_stopped_names_restarts_and_the_admin_api(deployment, tmp_path):
    with stopped("aws-masking-gateway"):
        result, checks = verify(tmp_path, quick=True)

        assert result.rc != 0
        assert failing(checks)["program_aws-masking-gateway"] == SECTIONS["startup_restarting"]
        assert failing(checks)["gateway_status"] == SECTIONS["gateway_admin"]
    assert wait_for(gateway_healthy)
    assert_passes(tmp_path, quick=True)


def test_port_taken_names_port_conflicts(deployment, tmp_path):
    with stopped("aws-masking-gateway"):
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", GATEWAY_PORT))
            squatter.listen()
            result, checks = verify(tmp_path, quick=True)

        assert result.rc != 0
        assert failing(checks)["port_gateway"] == SECTIONS["startup_ports"]
        assert "not nginx" in checks["port_gateway"]["evidence"]
    assert wait_for(gateway_healthy)
    assert_passes(tmp_path, quick=True)


@pytest.mark.parametrize(("path", "line", "check", "section"), [
    (PLUGIN_FILE, b"local corrupted = true", "plugin_files", "plugin"),
    (EDGE_CONFIG, b"this_is_no_directive on;", "config_edge", "nginx_proxy"),
], ids=["plugin_file_corrupted", "edge_config_broken"])
def test_changed_file_on_the_host_names_its_section(deployment, tmp_path, path, line, check,
                                                    section):
    # The running programs keep what they loaded; only verify's look at the files sees it.
    with rewritten(path, lambda raw: raw + b"\n" + line + b"\n"):
        result, checks = verify(tmp_path)

        assert result.rc != 0
        assert failing(checks) == {check: SECTIONS[section]}
        assert path.name in checks[check]["evidence"]
    assert_passes(tmp_path)


def test_upstream_unreachable_names_external_api_access(deployment, tmp_path):
    with stopped("aws-masking-mock-upstream"):
        result, checks = verify(tmp_path)

        assert result.rc != 0
        assert failing(checks)["upstream_tcp"] == SECTIONS["network_external"]
        # The canary never leaves the gateway, so it still proves masking works.
        assert checks["canary_json"]["status"] == "pass"
    assert wait_for(lambda: http_get("http://127.0.0.1:8099/health")[0] == 200)
    assert_passes(tmp_path)


@pytest.mark.parametrize("playbook", ["verify.yml", "health.yml", "status.yml"])
def test_read_only_playbooks_change_nothing_twice_and_in_check_mode(
        deployment, tmp_path, playbook):
    extravars = {"verify_report_dir": str(tmp_path / "r"),
                 "health_report_dir": str(tmp_path / "r")}
    config_before = {path: path.read_bytes() for path in (MASKER_CONFIG, EDGE_CONFIG)}
    for run, check in enumerate((False, False, True)):
        (tmp_path / f"run-{run}").mkdir()
        result = run_playbook(playbook, tmp_path / f"run-{run}", extravars=extravars,
                              cmdline="--check" if check else None)
        assert result.rc == 0, failed_tasks(result)
        assert result.stats["changed"].get(HOST, 0) == 0, result.stats
    assert {path: path.read_bytes() for path in config_before} == config_before
