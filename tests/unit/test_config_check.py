"""The configuration check module on files and sockets of its own in tmp_path.

Nothing of the deployed stack is used: the nginx configurations, the Redis configuration, the
catalog and the Lua files are written here, the port is a socket this test opens.
"""

from __future__ import annotations

import shutil
import socket

import pytest

from tests.conftest import REPO
from tests.unit.ansible_module import run_module

STRONG = "Zk3pQ9vX2mL7wR4tY8nB1cF6hJ0sD5gA"
NGINX = "/usr/sbin/nginx"


def nginx_conf(path, body=""):
    path.write_text(f"pid {path.parent}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                    f"http {{ {body} }}\n")
    return str(path)


def by_name(result):
    return {item["name"]: item for item in result["checks"]}


@pytest.fixture
def listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_password_strength_without_printing_it(tmp_path):
    cases = ((STRONG, "pass"), ("password1234567890", "fail"), ("a" * 40, "fail"),
             ("short", "fail"))
    for password, status in cases:
        code, result, output = run_module("config_check", {"redis_password": password})
        item = by_name(result)["Redis password strength"]
        assert (code, item["status"]) == ("SUCCESS", status), output
        assert password not in output
        assert item["section"] == ("1. Service Startup Issues / Container Keeps Restarting / "
                                   "Configuration Errors")
    missing = tmp_path / "none"
    _, result, _ = run_module("config_check", {"redis_password_file": str(missing)})
    assert by_name(result)["Redis password strength"]["status"] == "skip"


def test_api_key_shape_is_checked_only_when_one_is_injected():
    good = "sk-ant-api03-" + "A1b2C3d4" * 10
    _, result, output = run_module("config_check", {"anthropic_api_key": good})
    assert by_name(result)["Anthropic API key shape"]["status"] == "pass"
    assert good not in output
    _, result, output = run_module("config_check", {"anthropic_api_key": "sk-proj-abc"})
    assert by_name(result)["Anthropic API key shape"]["status"] == "fail"
    assert "sk-proj-abc" not in output
    _, result, _ = run_module("config_check", {"redis_password_min_length": 20})
    assert by_name(result)["Anthropic API key shape"]["status"] == "skip"


def test_a_port_held_by_another_program_fails_and_ours_passes(listener, tmp_path):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    ports = [{"name": "taken", "port": listener, "owner": "/no/such/config.conf"},
             {"name": "ours", "port": listener, "owner": "pytest"},
             {"name": "free", "port": free_port, "owner": "/no/such/config.conf"}]

    _, result, output = run_module("config_check", {"ports": ports})

    checks = by_name(result)
    assert checks[f"port taken {listener}"]["status"] == "fail", output
    assert "pid" in checks[f"port taken {listener}"]["evidence"]
    assert checks[f"port taken {listener}"]["section"] == (
        "1. Service Startup Issues / Container Keeps Restarting / Port Conflicts")
    assert checks[f"port ours {listener}"]["status"] == "pass"
    assert checks[f"port free {free_port}"]["status"] == "pass"
    assert result["failed_checks"] == [f"port taken {listener}"]
    assert result["changed"] is False


@pytest.mark.skipif(not shutil.which(NGINX), reason="nginx is not installed")
def test_nginx_configs_are_tested_and_missing_ones_skipped(tmp_path):
    good = nginx_conf(tmp_path / "good.conf")
    bad = nginx_conf(tmp_path / "bad.conf", "server { listen 127.0.0.1:1; no_such_directive; }")
    configs = [{"name": "edge", "path": good}, {"name": "gateway", "path": bad},
               {"name": "later", "path": str(tmp_path / "missing.conf")}]

    _, result, output = run_module("config_check", {"nginx_configs": configs})

    checks = by_name(result)
    assert checks["edge nginx configuration"]["status"] == "pass", output
    assert checks["gateway nginx configuration"]["status"] == "fail"
    assert "no_such_directive" in checks["gateway nginx configuration"]["evidence"]
    assert checks["later nginx configuration"]["status"] == "skip"


def test_redis_config_catalog_and_lua(tmp_path):
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port 6380\nrequirepass {STRONG}\nmaxmemory-policy volatile-lru\n"
                    f"dir {tmp_path}\n")
    lua = tmp_path / "lua"
    lua.mkdir()
    (lua / "ok.lua").write_text("local x = 1\nreturn x\n")
    args = {"redis_config": str(conf), "redis_port": 6380,
            "catalog": str(REPO / "catalog" / "aws_patterns.yml"), "lua_dir": str(lua)}

    _, result, output = run_module("config_check", args)
    checks = by_name(result)
    assert checks["Redis configuration"]["status"] == "pass", output
    assert checks["pattern catalog loads"]["status"] == "pass"
    assert checks["Lua plugin syntax"]["status"] == "pass"
    assert STRONG not in output

    (lua / "broken.lua").write_text("local x = = 1\n")
    conf.write_text("port 6379\nmaxmemory-policy sometimes\n")
    (tmp_path / "catalog.json").write_text('{"patterns": []}')
    args.update(catalog=str(tmp_path / "catalog.json"))
    _, result, output = run_module("config_check", args)
    checks = by_name(result)
    assert checks["Redis configuration"]["status"] == "fail"
    assert "no requirepass" in checks["Redis configuration"]["evidence"]
    assert "port is 6379" in checks["Redis configuration"]["evidence"]
    assert checks["pattern catalog loads"]["status"] == "fail"
    assert checks["Lua plugin syntax"]["status"] == "fail"
    assert "broken.lua" in checks["Lua plugin syntax"]["evidence"]


def test_check_mode_reports_the_same_and_changes_nothing(tmp_path):
    code, result, output = run_module("config_check", {"redis_password": STRONG}, check=True)

    assert code == "SUCCESS", output
    assert result["changed"] is False
    assert by_name(result)["Redis password strength"]["status"] == "pass"


def test_preflight_turns_failing_files_into_warnings_but_not_settings(tmp_path):
    lua = tmp_path / "lua"
    lua.mkdir()
    (lua / "broken.lua").write_text("local x = = 1\n")
    args = {"lua_dir": str(lua), "redis_password": "short", "preflight": True}

    _, result, output = run_module("config_check", args)

    checks = by_name(result)
    assert checks["Lua plugin syntax"]["status"] == "warn", output
    assert checks["Lua plugin syntax"]["remedy"].startswith("This deploy renders")
    assert checks["Redis password strength"]["status"] == "fail"
    assert result["failed_checks"] == ["Redis password strength"]
