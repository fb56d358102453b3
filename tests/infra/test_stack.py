"""Post-deploy checks of each host of a deployment, reusable against any inventory with testinfra:

    pytest tests/infra --hosts='ansible://gateway' --ansible-inventory=inventories/production
    pytest tests/infra --hosts='ansible://all' --ansible-inventory=inventories/local

Molecule's verifier runs them against this host after its converge. They read the deployed
state the way an operator would (programs, sockets, files, the health endpoints), never through
the repository. Each check runs on the hosts of the inventory group whose service it looks at,
with the ports, program names and paths the inventory sets (else the roles' defaults); the
values must be plain, not Jinja expressions. Outside the Ansible backend (--hosts=local://) the
host is taken to run every service with the defaults. The checks read root's files: connect as
root, or add --sudo.
"""

import json

import pytest

# Inventory group -> its service's settings: name -> (inventory variable, the role's default).
SERVICES = {
    "redis": {"program": ("redis_program_name", "aws-masking-redis"),
              "port": ("redis_port", 6379),
              "address": ("redis_bind_addresses", ["127.0.0.1"]),
              "secret": ("redis_password_file",
                         "/etc/aws-masking-gateway/secrets/redis_password")},
    "gateway": {"program": ("gateway_program_name", "aws-masking-gateway"),
                "port": ("gateway_proxy_port", 8010),
                "address": ("gateway_proxy_listen_address", "127.0.0.1"),
                "status_port": ("gateway_status_port", 8001),
                "status_address": ("gateway_status_listen_address", "127.0.0.1"),
                "secret": ("gateway_scope_secret_file",
                           "/etc/aws-masking-gateway/secrets/scope_secret"),
                "config": ("gateway_config_dir", "/etc/aws-masking-gateway/gateway")},
    "edge": {"program": ("edge_program_name", "aws-masking-edge"),
             "port": ("edge_port", 8085),
             "address": ("edge_listen_address", "127.0.0.1"),
             "config": ("edge_config_dir", "/etc/aws-masking-gateway/edge")},
}
ANY_ADDRESS = {"0.0.0.0", "::", "*"}


def service(host, group):
    """The settings of the group's service on this host; the check is skipped off the group."""
    if host.backend.NAME == "ansible":
        variables = host.ansible.get_variables()
        groups = variables.get("group_names", [])
    else:
        variables, groups = {}, list(SERVICES)
    if group not in groups:
        pytest.skip(f"{host.backend.hostname} is not in the {group} group")
    return {key: variables.get(name, default) for key, (name, default) in SERVICES[group].items()}


def reachable(address):
    """The address a client on the host connects to for a listen address."""
    address = address[0] if isinstance(address, list) else address
    return "127.0.0.1" if address in ANY_ADDRESS else address


def program_running(host, program):
    if host.file(f"/etc/systemd/system/{program}.service").exists:
        return host.service(program).is_running, "systemd"
    status = host.run(f"supervisorctl status {program}")
    return "RUNNING" in status.stdout, status.stdout + status.stderr


@pytest.mark.parametrize("group", list(SERVICES))
def test_program_runs_under_its_service_manager(host, group):
    running, evidence = program_running(host, service(host, group)["program"])

    assert running, evidence


@pytest.mark.parametrize("group", list(SERVICES))
def test_service_listens(host, group):
    settings = service(host, group)

    assert host.socket(f"tcp://{reachable(settings['address'])}:{settings['port']}").is_listening


def test_status_server_listens_on_loopback_only(host):
    settings = service(host, "gateway")
    port = f":{settings['status_port']}"
    addresses = [entry.split("://", 1)[-1].rsplit(":", 1)[0]
                 for entry in host.socket.get_listening_sockets() if entry.endswith(port)]

    assert addresses
    assert all(address.startswith("127.") or address == "::1" for address in addresses)


def test_redis_refuses_commands_without_the_password(host):
    settings = service(host, "redis")
    answer = host.run("redis-cli -h %s -p %s PING", reachable(settings["address"]),
                      str(settings["port"]))

    assert "NOAUTH" in answer.stdout + answer.stderr


@pytest.mark.parametrize("group", ["redis", "gateway"])
def test_secrets_are_readable_by_root_only(host, group):
    secret = host.file(service(host, group)["secret"])

    assert secret.exists
    assert secret.mode == 0o600
    assert secret.user == "root"
    assert len(secret.content_string.strip()) >= 32


def health(host, url):
    answer = host.run("curl -fsS %s", url)

    assert answer.rc == 0, answer.stderr
    return json.loads(answer.stdout)


def test_edge_health_reports_healthy(host):
    settings = service(host, "edge")
    url = f"http://{reachable(settings['address'])}:{settings['port']}/health"

    assert health(host, url)["status"] == "healthy"


def test_gateway_status_reports_healthy(host):
    settings = service(host, "gateway")
    url = f"http://{reachable(settings['status_address'])}:{settings['status_port']}/status"

    assert health(host, url)["status"] == "healthy"


@pytest.mark.parametrize("group", ["gateway", "edge"])
def test_nginx_configs_pass_nginx_t(host, group):
    config = f"{service(host, group)['config']}/nginx.conf"
    answer = host.run("nginx -t -c %s", config)

    assert answer.rc == 0, answer.stderr
