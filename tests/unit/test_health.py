"""The health checks, the canary module's refusals and the report, against real parts.

Redis is a private redis-server (test_mapping_store's fixture), sockets and ``ss`` are real,
and the modules run through the venv's ``ansible`` as an operator runs them. The deployed
stack is never touched: every port used here is a free one.
"""

import json
import os
import socket
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest

from tests.conftest import REPO, collection_module_utils
from tests.unit.test_mapping_store import (  # noqa: F401 (the redis_server fixture)
    PASSWORD,
    ansible_bin,
    free_port,
    redis_server,
)

checks_mod = collection_module_utils("_checks")
health = collection_module_utils("_health")
report = collection_module_utils("_report")
SECTIONS = checks_mod.SECTIONS


def run_module(name, args, check=False):
    command = [ansible_bin("ansible"), "localhost", "-m", f"aws_masking.gateway.{name}",
               "-a", json.dumps(args), "-o"] + (["--check"] if check else [])
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="false")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert PASSWORD not in done.stdout + done.stderr
    head = done.stdout.split("=>", 1)
    assert len(head) == 2, done.stdout + done.stderr
    return head[0].split("|")[-1].strip(), json.loads(head[1])


def by_name(checks):
    return {item["name"]: item for item in checks}


# -- the check shape ---------------------------------------------------------------------------

def test_a_check_names_a_guide_section_and_drops_the_remedy_when_it_passes():
    passed = checks_mod.make_check("x", "pass", "fine", "redis_connection", "do something")
    failed = checks_mod.make_check("x", "fail", "broken", "redis_connection", "do something")

    assert passed == {"name": "x", "status": "pass", "evidence": "fine",
                      "section": "4. Redis Issues / Redis Connection Refused", "remedy": ""}
    assert failed["remedy"] == "do something"
    with pytest.raises(ValueError):
        checks_mod.make_check("x", "ok", "", "redis_connection")
    with pytest.raises(ValueError):
        checks_mod.make_check("x", "pass", "", "no_such_section")


def test_every_section_is_a_heading_of_the_guide():
    guide = (REPO.parent / "shared" / "seed" / "TROUBLESHOOTING-GUIDE.md")
    if not guide.exists():
        pytest.skip("the troubleshooting guide is not next to this checkout")
    headings = [line.lstrip("#").strip().removeprefix("Issue: ").strip()
                for line in guide.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")]
    for section in SECTIONS.values():
        for part in section.split(" / "):
            assert any(part in heading for heading in headings), (section, part)


# -- observations --------------------------------------------------------------------------------

def run_command(argv):
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


def test_ports_name_the_holder_and_a_conflict():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        held = listener.getsockname()[1]
        idle = free_port()
        result = by_name(health.port_checks([
            {"name": "ours", "port": held, "process": None},
            {"name": "taken", "port": held, "process": "nginx"},
            {"name": "down", "port": idle, "process": "nginx"},
        ], run_command))

    assert result["port_ours"]["status"] == "pass"
    assert result["port_taken"]["status"] == "fail"
    assert result["port_taken"]["section"] == SECTIONS["startup_ports"]
    assert "not nginx" in result["port_taken"]["evidence"]
    assert result["port_down"]["status"] == "fail"
    assert result["port_down"]["section"] == SECTIONS["startup_restarting"]


def test_plugin_files_are_compared_by_checksum(tmp_path):
    (tmp_path / "a.lua").write_text("return 1\n")
    (tmp_path / "b.lua").write_text("return 2\n")
    expected = {"a.lua": health.sha1_file(tmp_path / "a.lua"),
                "b.lua": health.sha1_file(tmp_path / "b.lua"), "c.lua": "0" * 40}

    assert health.plugin_checks(str(tmp_path), {k: expected[k] for k in ("a.lua", "b.lua")})[
        0]["status"] == "pass"
    (tmp_path / "b.lua").write_text("return 2 -- corrupted\n")
    failed = health.plugin_checks(str(tmp_path), expected)[0]

    assert failed["status"] == "fail"
    assert failed["section"] == SECTIONS["plugin"]
    assert "1 differ (b.lua)" in failed["evidence"] and "1 missing (c.lua)" in failed["evidence"]


def test_recent_errors_are_counted_in_their_window_and_never_quoted(tmp_path):
    now = datetime(2025, 1, 2, 12, 0, 0)
    stamp = (now - timedelta(minutes=5)).strftime("%Y/%m/%d %H:%M:%S")
    old = (now - timedelta(hours=2)).strftime("%Y/%m/%d %H:%M:%S")
    log = tmp_path / "error.log"
    log.write_text(f"{old} [error] 1#1: old i-0123456789abcdef0\n"
                   f"{stamp} [error] 1#1: GET /i-0123456789abcdef0\n"
                   f"{stamp} [notice] 1#1: aws_masker status=200\n")

    result = health.log_checks([str(log)], 15, now=now)[0]

    assert result["status"] == "warn"
    assert result["evidence"] == "errors in the last 15 min: error.log: 1"
    assert health.log_checks([str(log)], 1, now=now)[0]["status"] == "pass"


def test_nginx_t_names_a_broken_configuration(tmp_path):
    good = tmp_path / "good.conf"
    good.write_text(f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/e.log; events {{}}\n")
    bad = tmp_path / "bad.conf"
    bad.write_text(f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/e.log; events {{}} nonsense;\n")

    result = by_name(health.config_checks([
        {"name": "edge", "path": str(good), "tier": "edge"},
        {"name": "broken_edge", "path": str(bad), "tier": "edge"},
        {"name": "broken_gateway", "path": str(bad), "tier": "gateway"},
    ], run_command))

    assert result["config_edge"]["status"] == "pass"
    assert result["config_broken_edge"]["status"] == "fail"
    assert "nonsense" in result["config_broken_edge"]["evidence"]
    assert result["config_broken_edge"]["section"] == SECTIONS["nginx_proxy"]
    assert result["config_broken_gateway"]["section"] == SECTIONS["gateway_admin"]


def test_upstream_plain_http_is_checked_to_tcp_and_a_closed_port_fails():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = by_name(health.upstream_checks(f"http://127.0.0.1:{port}", 2.0))
    closed = by_name(health.upstream_checks(f"http://127.0.0.1:{free_port()}", 2.0))

    assert [result[n]["status"] for n in ("upstream_dns", "upstream_tcp", "upstream_tls")] == [
        "pass", "pass", "skip"]
    assert closed["upstream_tcp"]["status"] == "fail"
    assert closed["upstream_tcp"]["section"] == SECTIONS["network_external"]
    unresolvable = by_name(health.upstream_checks("https://no-such-host.invalid", 2.0))
    assert unresolvable["upstream_dns"]["status"] == "fail"


# -- the modules -------------------------------------------------------------------------------

@pytest.mark.parametrize("check", [False, True], ids=["normal", "check_mode"])
def test_health_module_reports_redis_and_never_changes(redis_server, check):  # noqa: F811 (fixture)
    import redis

    client = redis.Redis(port=redis_server, password=PASSWORD)
    client.flushall()
    client.set("aws_masker:{0123456789abcdef0123}:t:AWS_EC2_000001", "i-0abc", ex=60)
    client.set("aws_masker:{0123456789abcdef0123}:seq:EC2", "1")  # no TTL: a fault
    before = sorted(client.scan_iter())

    status, result = run_module("gateway_health", {
        "check_redis": True, "port": redis_server, "password": PASSWORD}, check=check)

    assert status == "SUCCESS"
    assert result["changed"] is False
    checks = by_name(result["checks"])
    assert checks["redis_ping"]["status"] == "pass"
    assert checks["redis_keys_ttl"]["status"] == "fail"
    assert checks["redis_keys_ttl"]["evidence"] == "1 of 2 sampled masker keys have no TTL"
    assert result["healthy"] is False
    assert sorted(client.scan_iter()) == before
    assert client.ttl("aws_masker:{0123456789abcdef0123}:seq:EC2") == -1
    assert "i-0abc" not in json.dumps(result)


@pytest.mark.parametrize("check", [False, True], ids=["normal", "check_mode"])
def test_health_module_names_a_wrong_gateway_password(redis_server, tmp_path, check):  # noqa: F811 (fixture)
    config = tmp_path / "masker.json"
    config.write_text(json.dumps({"redis": {"host": "127.0.0.1", "port": redis_server,
                                            "password": "not-the-password", "database": 0}}))

    args = {"gateway_config": str(config), "check_redis": True, "port": redis_server,
            "password": PASSWORD}
    status, result = run_module("gateway_health", args, check=check)

    assert status == "SUCCESS" and result["changed"] is False
    checks = by_name(result["checks"])
    assert checks["redis_ping"]["status"] == "pass"
    assert checks["gateway_redis"]["status"] == "fail"
    assert checks["gateway_redis"]["section"] == SECTIONS["redis_connection"]
    assert "authenticate" in checks["gateway_redis"]["evidence"]
    assert "not-the-password" not in json.dumps(result)


@pytest.mark.parametrize("check", [False, True], ids=["normal", "check_mode"])
def test_canary_module_without_an_edge_fails_with_the_proxy_section(check):
    status, result = run_module("masking_canary", {
        "url": f"http://127.0.0.1:{free_port()}", "secret": PASSWORD, "modes": ["json"]},
        check=check)

    assert status == "SUCCESS" and result["changed"] is False
    assert result["healthy"] is False
    assert result["checks"][0]["section"] == SECTIONS["nginx_proxy"]


# -- the report --------------------------------------------------------------------------------

RESULTS = {
    "gw-2": [checks_mod.make_check("redis_ping", "fail", "Cannot connect to Redis: refused.",
                                   "redis_connection", "Start Redis."),
             checks_mod.make_check("upstream_tls", "skip", "http upstream", "tls")],
    "gw-1": [checks_mod.make_check("edge_health", "pass", "GET /health: 200", "startup_health"),
             checks_mod.make_check("recent_errors", "warn", "errors: 3", "logs", "Read them.")],
}


def test_table_lists_every_check_with_section_and_remedy_of_failures():
    lines = report.table(RESULTS["gw-2"])

    assert lines[0].split() == ["status", "check", "evidence"]
    assert lines[2].startswith("FAIL   redis_ping   Cannot connect")  # width of upstream_tls
    assert any("guide: 4. Redis Issues / Redis Connection Refused" in line for line in lines)
    assert any("remedy: Start Redis." in line for line in lines)
    assert lines[-1].startswith("SKIP   upstream_tls")


def test_summary_has_one_line_per_host():
    assert report.summary_lines(RESULTS) == [
        "gw-1: HEALTHY pass=1 fail=0 warn=1 skip=0",
        "gw-2: UNHEALTHY pass=0 fail=1 warn=0 skip=1 failed: redis_ping",
    ]


def test_json_document_carries_verdicts_and_checks():
    document = report.document(RESULTS, "2025-01-02T12:00:00+00:00")

    assert document["healthy"] is False
    assert document["hosts"]["gw-1"]["healthy"] is True
    assert document["hosts"]["gw-2"]["counts"] == {"pass": 0, "fail": 1, "warn": 0, "skip": 1}
    assert json.loads(json.dumps(document)) == document


def test_junit_has_a_suite_per_host_and_failures_with_their_section():
    root = ET.fromstring(report.junit(RESULTS))

    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "1", "1")
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert sorted(suites) == ["gw-1", "gw-2"]
    failure = suites["gw-2"].find("testcase[@name='redis_ping']/failure")
    assert failure.get("type") == "4. Redis Issues / Redis Connection Refused"
    assert "Remedy: Start Redis." in failure.text
    assert suites["gw-2"].find("testcase[@name='upstream_tls']/skipped") is not None
    assert suites["gw-1"].find("testcase[@name='recent_errors']/failure") is None
