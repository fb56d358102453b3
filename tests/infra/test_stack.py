"""Post-deploy checks of one host, reusable against any inventory with testinfra:

    pytest tests/infra --hosts='ansible://gateway' --ansible-inventory=inventories/production

Molecule's verifier runs them against this host after its converge. They read the deployed
state the way an operator would (processes, sockets, files, the health endpoints), never
through the repository.
"""

import json

import pytest

PROGRAMS = ["aws-masking-redis", "aws-masking-gateway", "aws-masking-edge"]
SECRETS = "/etc/aws-masking-gateway/secrets"


def _groups(host):
    return host.ansible.get_variables().get("group_names", []) if host.backend.NAME == "ansible" \
        else ["redis", "gateway", "edge"]


@pytest.mark.parametrize("program", PROGRAMS)
def test_program_runs_under_the_supervisor(host, program):
    status = host.run(f"supervisorctl status {program}")

    assert "RUNNING" in status.stdout, status.stdout + status.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:6379", "127.0.0.1:8010", "127.0.0.1:8001",
                                     "127.0.0.1:8085"])
def test_service_listens(host, address):
    assert host.socket(f"tcp://{address}").is_listening


def test_status_server_listens_on_loopback_only(host):
    listeners = host.socket.get_listening_sockets()

    assert not any(entry.endswith(":8001") and "127.0.0.1" not in entry for entry in listeners)


def test_redis_refuses_commands_without_the_password(host):
    answer = host.run("redis-cli -h 127.0.0.1 -p 6379 PING")

    assert "NOAUTH" in answer.stdout + answer.stderr


@pytest.mark.parametrize("name", ["redis_password", "scope_secret"])
def test_secrets_are_readable_by_root_only(host, name):
    secret = host.file(f"{SECRETS}/{name}")

    assert secret.exists
    assert secret.mode == 0o600
    assert secret.user == "root"
    assert len(secret.content_string.strip()) >= 32


def test_edge_health_reports_healthy(host):
    answer = host.run("curl -fsS http://127.0.0.1:8085/health")

    assert answer.rc == 0, answer.stderr
    assert json.loads(answer.stdout)["status"] == "healthy"


def test_gateway_status_reports_healthy(host):
    answer = host.run("curl -fsS http://127.0.0.1:8001/status")

    assert answer.rc == 0, answer.stderr
    assert json.loads(answer.stdout)["status"] == "healthy"


@pytest.mark.parametrize("config", ["gateway/nginx.conf", "edge/nginx.conf"])
def test_nginx_configs_pass_nginx_t(host, config):
    answer = host.run(f"nginx -t -c /etc/aws-masking-gateway/{config}")

    assert answer.rc == 0, answer.stderr
