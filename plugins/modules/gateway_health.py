#!/usr/bin/python
# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: gateway_health
short_description: Checks the health of the masking gateway's tiers on one host
version_added: 0.1.0
description:
  - Runs the checks its options ask for and returns each as a dict with C(name), C(status)
    (C(pass), C(fail), C(warn) or C(skip)), C(evidence), C(section) (the troubleshooting
    guide's section to read) and C(remedy).
  - "Checks: the edge's C(/health) (O(edge_url)); the gateway's status page, which pings Redis
    (O(status_url)); Redis itself: AUTH and PING, C(used_memory) against C(maxmemory), a sample
    of masker keys without a TTL (O(check_redis)); Redis as the gateway reaches it, with the
    settings in its C(masker.json) (O(gateway_config)); the upstream from this host: DNS, TCP
    connect and the TLS handshake for C(https) (O(upstream_url)); programs under the service
    manager (O(programs)); who listens on each port (O(ports)); C(nginx -t) of rendered
    configurations (O(nginx_configs)); the deployed Lua plugin files against checksums
    (O(plugin_files)); errors in the last minutes of nginx error logs (O(error_logs))."
  - The module only reads. An unhealthy host is a successful run with RV(healthy=false); the
    playbooks decide when to fail. Evidence never holds a password, a request body or a value
    stored in Redis.
author:
  - AWS masking gateway maintainers (!UNKNOWN)
extends_documentation_fragment:
  - aws_masking.gateway.attributes
  - aws_masking.gateway.redis_connection
attributes:
  check_mode:
    support: full
    details: Every check only reads, so check mode runs them all.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: C(changed) is always false.
options:
  edge_url:
    description: Base URL of the edge; C(/health) is appended.
    type: str
  status_url:
    description: URL of the gateway's status page (C(503) while Redis cannot be reached).
    type: str
  check_redis:
    description: Check Redis with the connection options (the redis_connection fragment).
    type: bool
    default: false
  key_sample:
    description: Masker keys walked with C(SCAN) when looking for keys without a TTL.
    type: int
    default: 1000
  gateway_config:
    description:
      - The gateway's plugin configuration (C(masker.json)); Redis is reached with its host,
        port, database and password, as the gateway does.
    type: path
  upstream_url:
    description: Base URL of the upstream, checked from this host (DNS, TCP, TLS for https).
    type: str
  upstream_tls_verify:
    description: Check the upstream's certificate and name in the TLS handshake.
    type: bool
    default: true
  upstream_ca_file:
    description: CA bundle for the upstream's certificate; unset, the system's trust store.
    type: path
  service_manager:
    description: What runs the O(programs).
    type: str
    choices: [supervisor, systemd]
    default: supervisor
  programs:
    description: Programs that must be running under O(service_manager).
    type: list
    elements: str
    default: []
  ports:
    description:
      - Ports that must be listening, each with the program C(name), the C(port) and the
        C(process) name expected to hold it (C(nginx), C(redis-server)); another holder fails.
    type: list
    elements: dict
    default: []
  nginx_configs:
    description:
      - Rendered nginx configurations to test with C(nginx -t -q -c), each with C(name),
        C(path), C(tier) (C(edge) or C(gateway), which chooses the guide section) and an
        optional C(binary).
    type: list
    elements: dict
    default: []
  plugin_dir:
    description: Where the Lua plugin tree is deployed.
    type: path
  plugin_files:
    description: SHA-1 of each file of the collection's Lua tree, by path relative to O(plugin_dir).
    type: dict
  error_logs:
    description: nginx error logs whose recent lines at level C(error) or worse are counted.
    type: list
    elements: path
    default: []
  log_window_minutes:
    description: How far back O(error_logs) are read.
    type: int
    default: 15
  http_timeout:
    description: Seconds each HTTP request, DNS look-up or connection may take.
    type: float
    default: 5.0
seealso:
  - module: aws_masking.gateway.masking_canary
  - module: aws_masking.gateway.mapping_store_info
"""

EXAMPLES = r"""
- name: The gateway host is healthy
  aws_masking.gateway.gateway_health:
    edge_url: http://127.0.0.1:8085
    status_url: http://127.0.0.1:8001/status
    check_redis: true
    password: "{{ redis_password }}"
    upstream_url: https://api.anthropic.com
    programs: [aws-masking-redis, aws-masking-gateway, aws-masking-edge]
    ports:
      - {name: gateway, port: 8010, process: nginx}
      - {name: redis, port: 6379, process: redis-server}
  register: health

- name: Nothing failed
  ansible.builtin.assert:
    that: health.healthy
    fail_msg: "{{ health.checks | selectattr('status', 'eq', 'fail') | list }}"
"""

RETURN = r"""
checks:
  description: Every check run, in order.
  returned: always
  type: list
  elements: dict
  sample:
    - name: redis_ping
      status: fail
      evidence: "Cannot connect to Redis at 127.0.0.1:6379/0: Connection refused."
      section: 4. Redis Issues / Redis Connection Refused
      remedy: Start Redis (playbooks/restart.yml -e restart_service=redis) ...
healthy:
  description: True when no check failed.
  returned: always
  type: bool
counts:
  description: Number of checks of each status.
  returned: always
  type: dict
  sample: {pass: 12, fail: 1, warn: 0, skip: 1}
programs:
  description: State, main pid, uptime and resident memory (KiB, with children) of O(programs).
  returned: always
  type: dict
  sample:
    aws-masking-gateway: {state: RUNNING, pid: 4242, uptime: "1:02:03", rss_kb: 20480}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.aws_masking.gateway.plugins.module_utils import (
    _health as health,
)
from ansible_collections.aws_masking.gateway.plugins.module_utils._checks import (
    counts,
    healthy,
)
from ansible_collections.aws_masking.gateway.plugins.module_utils._mapping_store import (
    REDIS_IMPORT_ERROR,
    connection_argument_spec,
)


def argument_spec():
    spec = connection_argument_spec()
    spec.update(
        edge_url={"type": "str"},
        status_url={"type": "str"},
        check_redis={"type": "bool", "default": False},
        key_sample={"type": "int", "default": 1000, "no_log": False},
        gateway_config={"type": "path"},
        upstream_url={"type": "str"},
        upstream_tls_verify={"type": "bool", "default": True},
        upstream_ca_file={"type": "path"},
        service_manager={"type": "str", "choices": ["supervisor", "systemd"],
                         "default": "supervisor"},
        programs={"type": "list", "elements": "str", "default": []},
        ports={"type": "list", "elements": "dict", "default": []},
        nginx_configs={"type": "list", "elements": "dict", "default": []},
        plugin_dir={"type": "path"},
        plugin_files={"type": "dict"},
        error_logs={"type": "list", "elements": "path", "default": []},
        log_window_minutes={"type": "int", "default": 15},
        http_timeout={"type": "float", "default": 5.0},
    )
    return spec


def run_checks(module):
    params = module.params
    timeout = params["http_timeout"]

    def run_command(argv):
        return module.run_command(argv, check_rc=False, environ_update={"LC_ALL": "C"})

    checks = []
    states = health.program_states(params["programs"], params["service_manager"], run_command)
    checks += health.program_checks(states)
    if params["ports"]:
        checks += health.port_checks(
            [{"name": p["name"], "port": int(p["port"]), "process": p.get("process")}
             for p in params["ports"]], run_command)
    if params["edge_url"]:
        checks += health.edge_checks(params["edge_url"], timeout)
    if params["status_url"]:
        checks += health.gateway_status_checks(params["status_url"], timeout)
    if params["check_redis"]:
        checks += health.redis_checks(params, params["key_sample"])
    if params["gateway_config"]:
        checks += health.gateway_redis_checks(params["gateway_config"])
    if params["upstream_url"]:
        checks += health.upstream_checks(params["upstream_url"], timeout,
                                         params["upstream_tls_verify"], params["upstream_ca_file"])
    checks += health.config_checks(params["nginx_configs"], run_command)
    if params["plugin_dir"] and params["plugin_files"]:
        checks += health.plugin_checks(params["plugin_dir"], params["plugin_files"])
    if params["error_logs"]:
        checks += health.log_checks(params["error_logs"], params["log_window_minutes"])
    return checks, states


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if (module.params["check_redis"] or module.params["gateway_config"]) and REDIS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    checks, states = run_checks(module)
    module.exit_json(changed=False, checks=checks, healthy=healthy(checks), counts=counts(checks),
                     programs=states)


if __name__ == "__main__":
    main()
