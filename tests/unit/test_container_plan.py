"""The docker runtime's containers and rendered files, as the roles plan them for an inventory.

No Docker engine runs here, so the roles' "container_plan" entry points compute the
docker_container parameters as data and tests/unit/playbooks/container_plan.yml writes them,
with every template the host's tiers render, to a directory per host. The assertions hold them
to the troubleshooting guide: names (claude-redis, claude-kong, claude-nginx), the
claude-enterprise network, ports, health checks, memory limits (KONG_MEMORY_LIMIT=4G,
REDIS_MEMORY_LIMIT=1G), restart policy, the Redis volume, and pinned image tags. The same
playbook on the local inventory with the host runtime shows the host files are unchanged by it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "tests" / "unit" / "playbooks" / "container_plan.yml"
# Stand-ins for the secrets the roles read on the hosts; none may reach a container definition.
REDIS_SECRET = "plan-redis-password-not-a-real-one"
SCOPE_SECRET = "plan-scope-secret-not-a-real-one"
PINNED = re.compile(r"^[a-z0-9./-]+:\d+(\.\d+)*(-[a-z0-9.]+)?$")


def _plan(tmp_path_factory, inventory, *extra):
    plan_dir = tmp_path_factory.mktemp("plan")
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")), str(PLAYBOOK),
        "-i", str(REPO / "inventories" / inventory),
        "-e", "ansible_connection=local",
        "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", f"plan_dir={plan_dir}",
        "-e", f"redis_effective_password={REDIS_SECRET}",
        "-e", f"gateway_effective_redis_password={REDIS_SECRET}",
        "-e", f"gateway_effective_scope_secret={SCOPE_SECRET}",
        *extra,
    ]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return plan_dir


def _containers(plan_dir, host):
    return json.loads((plan_dir / host / "containers.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    return _plan(tmp_path_factory, "production")


@pytest.fixture(scope="module")
def local_docker(tmp_path_factory):
    return _plan(tmp_path_factory, "local", "-e", "aws_masking_runtime=docker")


@pytest.fixture(scope="module")
def local_host(tmp_path_factory):
    return _plan(tmp_path_factory, "local")


def _every_container(plan_dir):
    for host_dir in sorted(plan_dir.iterdir()):
        plan = _containers(plan_dir, host_dir.name)
        for tier in ("redis", "gateway", "edge"):
            if plan[tier] is not None:
                yield host_dir.name, tier, plan[tier]


def test_production_places_the_tiers_on_the_fleet(production):
    tiers = {
        host: [tier for tier in ("redis", "gateway", "edge") if _containers(production, host)[tier]]
        for host in ("redis-prod-1", "gw-prod-1", "gw-prod-2")
    }

    assert tiers == {"redis-prod-1": ["redis"], "gw-prod-1": ["gateway", "edge"],
                     "gw-prod-2": ["gateway", "edge"]}


def test_every_container_follows_the_shared_settings(production):
    containers = list(_every_container(production))

    assert len(containers) == 5
    for host, tier, container in containers:
        where = f"{host}/{tier}"
        assert container["networks"][0]["name"] == "claude-enterprise", where
        assert container["restart_policy"] == "unless-stopped", where
        assert PINNED.match(container["image"]), f"{where}: image {container['image']!r}"
        health = container["healthcheck"]
        assert (health["interval"], health["timeout"], health["retries"]) == ("30s", "10s", 3)
        assert container["labels"] == {"aws-masking.tier": tier}
        # No secret is passed in the environment, the command or the health check.
        assert REDIS_SECRET not in json.dumps(container), where
        assert SCOPE_SECRET not in json.dumps(container), where


def test_redis_container_is_the_guides(production):
    redis = _containers(production, "redis-prod-1")["redis"]
    conf = (production / "redis-prod-1" / "redis.conf").read_text(encoding="utf-8")

    assert redis["name"] == "claude-redis"
    assert redis["networks"][0]["aliases"] == ["redis"]
    assert redis["memory"] == "1G"
    assert redis["published_ports"] == ["127.0.0.1:6379:6379", "10.30.0.21:6379:6379"]
    assert {"type": "volume", "source": "claude-redis-data", "target": "/data"} in redis["mounts"]
    secret_mount = {"type": "bind", "source": "/etc/aws-masking-gateway/secrets/redis_password",
                    "target": "/run/secrets/redis_password", "read_only": True}
    assert secret_mount in redis["mounts"]
    assert redis["healthcheck"]["test"][0] == "CMD-SHELL"
    probe = redis["healthcheck"]["test"][1]
    assert 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)"' in probe
    assert "redis-cli -p 6379" in probe and "ping | grep -q PONG" in probe
    assert redis["command"] == ["redis-server", "/etc/aws-masking-gateway/redis/redis.conf"]
    # The configuration the container reads: every address of the container, the volume,
    # persistence and the password.
    for line in ("bind 0.0.0.0", "port 6379", "dir /data", "appendonly yes",
                 "appendfsync everysec", f'requirepass "{REDIS_SECRET}"'):
        assert re.search(rf"^{re.escape(line)}$", conf, re.M), line


@pytest.mark.parametrize("host", ["gw-prod-1", "gw-prod-2"])
def test_gateway_container_is_the_guides(production, host):
    plan = _containers(production, host)
    gateway = plan["gateway"]
    conf = (production / host / "gateway-nginx.conf").read_text(encoding="utf-8")

    assert gateway["name"] == "claude-kong"
    assert gateway["networks"][0]["aliases"] == ["kong"]
    assert gateway["memory"] == "4G"
    # The proxy and the status server are published on the host's loopback only.
    assert gateway["published_ports"] == ["127.0.0.1:8010:8010", "127.0.0.1:8001:8001"]
    assert gateway["healthcheck"]["test"] == [
        "CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8001/status"]
    assert gateway["stop_signal"] == "QUIT"
    targets = {mount["target"]: mount.get("read_only", False) for mount in gateway["mounts"]}
    assert targets == {
        "/etc/aws-masking-gateway/gateway": True, "/opt/aws-masking-gateway/lua": True,
        "/var/lib/aws-masking-gateway/gateway": False, "/var/log/aws-masking-gateway": False,
        "/etc/ssl/certs/ca-certificates.crt": True}
    # Every gateway of the fleet uses the one Redis of the redis group.
    assert plan["gateway_masker_config"]["redis"]["host"] == "10.30.0.21"
    assert "listen 0.0.0.0:8010;" in conf and "listen 0.0.0.0:8001;" in conf
    assert "proxy_ssl_verify on;" in conf
    assert "server api.anthropic.com:443;" in conf


def test_gateway_image_has_the_host_runtimes_packages(production):
    dockerfile = (production / "gw-prod-1" / "Dockerfile").read_text(encoding="utf-8")

    assert re.search(r"^FROM debian:\d+\.\d+-slim$", dockerfile, re.M)
    packages = re.search(r"--no-install-recommends \\\n\s+(.*) \\", dockerfile).group(1).split()
    assert packages == ["nginx", "libnginx-mod-http-ndk", "libnginx-mod-http-lua", "lua-cjson",
                        "lua-nginx-redis", "lua-zlib", "ca-certificates", "curl"]


@pytest.mark.parametrize("host", ["gw-prod-1", "gw-prod-2"])
def test_edge_container_is_the_guides(production, host):
    edge = _containers(production, host)["edge"]
    conf = (production / host / "edge-nginx.conf").read_text(encoding="utf-8")

    assert edge["name"] == "claude-nginx"
    assert edge["networks"][0]["aliases"] == ["nginx"]
    assert edge["memory"] == "512M"
    assert edge["published_ports"] == ["0.0.0.0:8085:8085"]
    assert edge["healthcheck"]["test"] == [
        "CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8085/health"]
    # The edge reaches the gateway container by its name on the network.
    assert "server kong:8010;" in conf
    assert "proxy_pass http://kong:8001/status;" in conf
    assert "listen 0.0.0.0:8085;" in conf


def test_one_host_reaches_its_own_redis_container_by_name(local_docker):
    plan = _containers(local_docker, "gateway-local")

    assert plan["gateway_masker_config"]["redis"]["host"] == "redis"
    assert plan["redis"]["published_ports"] == ["127.0.0.1:6379:6379"]
    assert [plan[tier]["name"] for tier in ("redis", "gateway", "edge")] == [
        "claude-redis", "claude-kong", "claude-nginx"]


def test_the_host_runtime_renders_what_it_did(local_host):
    """The docker switches leave the host runtime's files as they were: loopback everywhere."""
    host_dir = local_host / "gateway-local"
    redis = (host_dir / "redis.conf").read_text(encoding="utf-8")
    gateway = (host_dir / "gateway-nginx.conf").read_text(encoding="utf-8")
    edge = (host_dir / "edge-nginx.conf").read_text(encoding="utf-8")
    plan = _containers(local_host, "gateway-local")

    assert re.search(r"^bind 127\.0\.0\.1$", redis, re.M)
    assert re.search(r"^dir /var/lib/aws-masking-gateway/redis$", redis, re.M)
    assert "listen 127.0.0.1:8010;" in gateway and "listen 127.0.0.1:8001;" in gateway
    assert "server 127.0.0.1:8010;" in edge and "listen 127.0.0.1:8085;" in edge
    assert "proxy_pass http://127.0.0.1:8001/status;" in edge
    assert plan["gateway_masker_config"]["redis"]["host"] == "127.0.0.1"
