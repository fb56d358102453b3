#!/usr/bin/python
# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: config_check
short_description: Checks the gateway's configuration before and after a deploy
version_added: 0.1.0
description:
  - Runs the troubleshooting guide's configuration checks on the host and returns each as
    C({name, status, evidence, section, remedy}); status is C(pass), C(fail), C(warn) or C(skip),
    section names the guide's heading to read.
  - The Anthropic API key shape (only when the gateway is given a key to inject), the Redis
    password's length and entropy, ports free or held by the gateway's own programs, the rendered
    nginx configurations (C(nginx -t)), the Redis configuration, the pattern catalog and the
    syntax of the Lua plugin files.
  - A file that does not exist yet (a first deploy) gives a C(skip), not a failure.
  - Secrets are never returned; the evidence says how long a password is, not what it is.
  - Read-only; the module does not fail when a check fails, the caller decides (see the
    validate playbook).
author:
  - AWS masking gateway maintainers (!UNKNOWN)
extends_documentation_fragment:
  - aws_masking.gateway.attributes
attributes:
  check_mode:
    support: full
    details: The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: It never changes anything.
requirements:
  - psutil on the host for the port checks (they are skipped without it)
options:
  anthropic_api_key:
    description: The key the gateway injects upstream, if any. Unset, the check is skipped.
    type: str
  redis_password:
    description: The Redis password to judge. Unset, I(redis_password_file) is read.
    type: str
  redis_password_file:
    description: File holding the Redis password; when it does not exist the check is skipped.
    type: path
  redis_password_min_length:
    description: Shortest password accepted.
    type: int
    default: 20
  redis_password_min_bits:
    description: Least estimated entropy accepted, in bits (length times the Shannon entropy of
      its characters). A random password of 20 letters and digits has about 85.
    type: int
    default: 80
  ports:
    description: Ports that must be free or held by the gateway's own programs.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: What listens there, for the report.
        type: str
        required: true
      port:
        description: TCP port.
        type: int
        required: true
      owner:
        description: Text in the command line of the program (or one of its parents) that owns
          the port, e.g. its configuration path.
        type: str
      program:
        description: The service manager program that owns the port; its main process (or a
          child of it) holding the port counts as ours. Needed where the program rewrites its
          command line (redis-server).
        type: str
  service_manager:
    description: How I(ports)' programs run, to ask for their main process.
    type: str
    choices: [supervisor, systemd]
    default: supervisor
  nginx_binary:
    description: nginx executable for C(nginx -t).
    type: path
    default: /usr/sbin/nginx
  nginx_configs:
    description: nginx configurations to test with C(nginx -t -c).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Which tier, for the report (C(edge), C(gateway)).
        type: str
        required: true
      path:
        description: The configuration file.
        type: path
        required: true
  redis_config:
    description: The rendered Redis configuration to check.
    type: path
  redis_port:
    description: The port the Redis configuration must name.
    type: int
  catalog:
    description: The pattern catalog (the deployed JSON or the collection's YAML) that must load.
    type: path
  lua_dir:
    description: Directory of the deployed Lua plugin tree whose files must compile.
    type: path
  preflight:
    description:
      - Run before a deploy. The deployed files (nginx and Redis configurations, catalog, Lua
        tree) are about to be replaced, so a failure of theirs is reported as C(warn), and only
        the settings (key, password, ports) can fail.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The configuration is checked
  aws_masking.gateway.config_check:
    redis_password_file: /etc/aws-masking-gateway/secrets/redis_password
    ports:
      - {name: edge, port: 8085, owner: /etc/aws-masking-gateway/edge/nginx.conf}
    nginx_configs:
      - {name: edge, path: /etc/aws-masking-gateway/edge/nginx.conf}
    catalog: /etc/aws-masking-gateway/gateway/aws_patterns.json
    lua_dir: /opt/aws-masking-gateway/lua
  register: config

- name: Nothing failed
  ansible.builtin.assert:
    that: config.failed_checks | length == 0
"""

RETURN = r"""
checks:
  description: Every check, in the order run.
  returned: success
  type: list
  elements: dict
  sample:
    - name: port edge 8085
      status: pass
      evidence: held by our program (nginx, pid 4242)
      section: 1. Service Startup Issues / Container Keeps Restarting / Port Conflicts
      remedy: ""
failed_checks:
  description: Names of the checks with status C(fail).
  returned: success
  type: list
  elements: str
"""

import json
import math
import os
import re
import shutil
import subprocess
from collections import Counter

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aws_masking.gateway.plugins.module_utils._checks import (
    make_check as check,
)
from ansible_collections.aws_masking.gateway.plugins.module_utils.aws_masker_engine import (
    Catalog,
    CatalogError,
)

try:
    import psutil
except ImportError:  # reported as a skipped check
    psutil = None

API_KEY_RE = re.compile(r"^sk-ant-[a-z0-9]+-[A-Za-z0-9_-]{32,}$")
REDIS_POLICIES = {"volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random",
                  "allkeys-lru", "allkeys-lfu", "allkeys-random", "noeviction"}
# luajit reads this from stdin and compiles every file named after it, without running them.
LUA_COMPILE = (
    "local bad = 0\n"
    "for _, path in ipairs(arg) do\n"
    "  local ok, err = loadfile(path)\n"
    "  if not ok then bad = bad + 1; io.stdout:write(err, '\\n') end\n"
    "end\n"
    "os.exit(bad == 0 and 0 or 1)\n"
)


def scrub(text, secrets):
    """``text`` with every secret value replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


def entropy_bits(value):
    counts = Counter(value)
    per_char = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return len(value) * per_char


def check_api_key(key):
    name = "Anthropic API key shape"
    if key is None:
        return check(name, "skip", "no key configured: the gateway passes each client's own key",
                     "startup_config")
    if API_KEY_RE.match(key):
        return check(name, "pass", f"has the sk-ant-<kind>-... shape, {len(key)} characters",
                     "startup_config")
    return check(name, "fail", f"does not have the sk-ant-<kind>-... shape ({len(key)} "
                 "characters)", "startup_config", "Fix the ANTHROPIC_API_KEY format: set the key "
                 "from the Anthropic console, best from Ansible Vault")


def check_redis_password(password, path, min_length, min_bits):
    name = "Redis password strength"
    if password is None:
        if not path or not os.path.isfile(path):
            return check(name, "skip", f"{path or 'no password file'} does not exist yet; the "
                         "redis role generates one on the first deploy", "startup_config"), None
        with open(path, encoding="utf-8") as handle:
            password = handle.read().strip()
    bits = entropy_bits(password) if password else 0.0
    evidence = f"{len(password)} characters, about {int(bits)} bits of entropy"
    if len(password) < min_length or bits < min_bits:
        return check(name, "fail", f"{evidence}; wanted at least {min_length} characters and "
                     f"{min_bits} bits", "startup_config", "Correct REDIS_PASSWORD: set "
                     "redis_password to a long random value (or leave it empty to have one "
                     "generated)"), password
    return check(name, "pass", evidence, "startup_config"), password


def _listeners(port):
    return [conn for conn in psutil.net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port]


def program_pid(manager, program):
    """Main process id of a service manager program, 0 when it does not run."""
    if not program:
        return 0
    command = (["supervisorctl", "pid", program] if manager == "supervisor"
               else ["systemctl", "show", "--property=MainPID", "--value", program])
    if not shutil.which(command[0]):
        return 0
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    text = done.stdout.strip()
    return int(text) if done.returncode == 0 and text.isdigit() else 0


def _owned_by(pid, owner, main_pid):
    """Whether the process or one of its parents is the program's main process or has
    ``owner`` in its command line."""
    try:
        process = psutil.Process(pid)
        for candidate in [process, *process.parents()]:
            if main_pid and candidate.pid == main_pid:
                return True
            if owner and owner in " ".join(candidate.cmdline()):
                return True
    except psutil.Error:
        return False
    return False


def check_port(entry, manager="supervisor"):
    name = f"port {entry['name']} {entry['port']}"
    if psutil is None:
        return check(name, "skip", "psutil is not installed for the Python Ansible uses here",
                     "startup_ports")
    held = _listeners(entry["port"])
    if not held:
        return check(name, "pass", "free", "startup_ports")
    pids = sorted({conn.pid for conn in held if conn.pid})
    main_pid = program_pid(manager, entry["program"])
    ours = [pid for pid in pids if _owned_by(pid, entry["owner"], main_pid)]
    if ours and len(ours) == len(pids):
        return check(name, "pass", f"held by our {entry['name']} program (pid "
                     f"{', '.join(map(str, ours))})", "startup_ports")
    others = []
    for pid in pids:
        if pid in ours:
            continue
        try:
            others.append(f"{psutil.Process(pid).name()} (pid {pid})")
        except psutil.Error:
            others.append(f"pid {pid}")
    holder = ", ".join(others) or "a process this account cannot see"
    return check(name, "fail", f"held by {holder}", "startup_ports",
                 f"Stop the conflicting process (ss -ltnp sport = :{entry['port']}) or change "
                 "the port in the inventory")


def check_nginx(binary, entry, secrets):
    section = "nginx_proxy" if entry["name"] == "edge" else "gateway_admin"
    name = f"{entry['name']} nginx configuration"
    if not os.path.isfile(entry["path"]):
        return check(name, "skip", f"{entry['path']} is not rendered yet", section)
    done = subprocess.run([binary, "-t", "-q", "-c", entry["path"]], capture_output=True,
                          text=True, check=False, timeout=60)
    output = scrub((done.stderr + done.stdout).strip(), secrets)
    if done.returncode == 0:
        return check(name, "pass", f"nginx -t accepts {entry['path']}", section)
    lines = output.splitlines()
    first_error = next((line for line in lines if "[emerg]" in line or "[alert]" in line),
                       lines[-1] if lines else f"nginx -t exit {done.returncode}")
    return check(name, "fail", first_error, section, f"Fix {entry['path']} (redeploy the role that "
                 "renders it); nginx -t -c shows the line")


def check_redis_config(path, port):
    name = "Redis configuration"
    if not path or not os.path.isfile(path):
        return check(name, "skip", f"{path or 'no file'} is not rendered yet", "redis_connection")
    directives = Counter()
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            words = line.split(None, 1)
            if not words or words[0].startswith("#"):
                continue
            key = words[0].lower()
            directives[key] += 1
            values[key] = words[1].strip() if len(words) > 1 else ""
    problems = []
    if not values.get("requirepass"):
        problems.append("no requirepass")
    if port is not None and values.get("port") != str(port):
        problems.append(f"port is {values.get('port', 'unset')}, not {port}")
    policy = values.get("maxmemory-policy")
    if policy and policy not in REDIS_POLICIES:
        problems.append(f"maxmemory-policy {policy} is unknown")
    data_dir = values.get("dir")
    if data_dir and not os.path.isdir(data_dir):
        problems.append(f"data directory {data_dir} does not exist")
    twice = sorted(key for key, count in directives.items()
                   if count > 1 and key not in ("bind", "save", "rename-command", "include",
                                                "loadmodule", "user"))
    if twice:
        problems.append(f"set twice: {', '.join(twice)}")
    if problems:
        return check(name, "fail", "; ".join(problems), "redis_connection",
                     "Redeploy the redis role; check redis_port and redis_password")
    return check(name, "pass", f"{path}: port {values.get('port')}, password set, "
                 f"policy {policy or 'default'}", "redis_connection")


def check_catalog(path):
    name = "pattern catalog loads"
    if not path or not os.path.isfile(path):
        return check(name, "skip", f"{path or 'no file'} is not deployed yet", "plugin")
    try:
        with open(path, encoding="utf-8") as handle:
            if path.endswith(".json"):
                data = json.load(handle)
            else:
                import yaml

                data = yaml.safe_load(handle)
        catalog = Catalog.from_data(data)
    except (OSError, ValueError, CatalogError, ImportError) as exc:
        return check(name, "fail", f"{path}: {exc}", "plugin",
                     "Redeploy the gateway role to put the collection's catalog back")
    return check(name, "pass", f"{path}: {len(catalog.patterns)} patterns compile",
                 "plugin")


def check_lua(lua_dir):
    name = "Lua plugin syntax"
    if not lua_dir or not os.path.isdir(lua_dir):
        return check(name, "skip", f"{lua_dir or 'no directory'} is not deployed yet",
                     "plugin")
    files = sorted(os.path.join(root, f) for root, _dirs, names in os.walk(lua_dir)
                   for f in names if f.endswith(".lua"))
    if not files:
        return check(name, "fail", f"no .lua file under {lua_dir}", "plugin",
                     "Redeploy the gateway role")
    luajit = shutil.which("luajit")
    if luajit:
        done = subprocess.run([luajit, "-", *files], input=LUA_COMPILE, capture_output=True,
                              text=True, check=False, timeout=120)
        tool = "luajit"
    else:
        luac = shutil.which("luac5.1") or shutil.which("luac")
        if not luac:
            return check(name, "skip", "neither luajit nor luac is installed", "plugin")
        done = subprocess.run([luac, "-p", *files], capture_output=True, text=True,
                              check=False, timeout=120)
        tool = os.path.basename(luac)
    if done.returncode == 0:
        return check(name, "pass", f"{len(files)} files compile ({tool})", "plugin")
    output = (done.stdout + done.stderr).strip().splitlines()
    return check(name, "fail", "; ".join(output[:3]) or f"{tool} exit {done.returncode}",
                 "plugin", "A plugin file is damaged: redeploy the gateway role or roll "
                 "back (playbooks/rollback.yml)")


def run_checks(params):
    checks = [check_api_key(params["anthropic_api_key"])]
    password_check, password = check_redis_password(
        params["redis_password"], params["redis_password_file"],
        params["redis_password_min_length"], params["redis_password_min_bits"])
    checks.append(password_check)
    secrets = [s for s in (password, params["anthropic_api_key"]) if s]
    checks.extend(check_port(entry, params["service_manager"]) for entry in params["ports"])
    first_file_check = len(checks)
    checks.extend(check_nginx(params["nginx_binary"], entry, secrets)
                  for entry in params["nginx_configs"])
    if params["redis_config"]:
        checks.append(check_redis_config(params["redis_config"], params["redis_port"]))
    if params["catalog"]:
        checks.append(check_catalog(params["catalog"]))
    if params["lua_dir"]:
        checks.append(check_lua(params["lua_dir"]))
    for item in checks:
        item["evidence"] = scrub(item["evidence"], secrets)
    if params["preflight"]:
        for item in checks[first_file_check:]:
            if item["status"] == "fail":
                item["status"] = "warn"
                item["remedy"] = f"This deploy renders the file again. {item['remedy']}"
    return checks


def main():
    module = AnsibleModule(
        argument_spec={
            "anthropic_api_key": {"type": "str", "no_log": True},
            "redis_password": {"type": "str", "no_log": True},
            "redis_password_file": {"type": "path", "no_log": False},
            "redis_password_min_length": {"type": "int", "default": 20, "no_log": False},
            "redis_password_min_bits": {"type": "int", "default": 80, "no_log": False},
            "ports": {"type": "list", "elements": "dict", "default": [], "options": {
                "name": {"type": "str", "required": True},
                "port": {"type": "int", "required": True},
                "owner": {"type": "str"},
                "program": {"type": "str"},
            }},
            "service_manager": {"type": "str", "default": "supervisor",
                                "choices": ["supervisor", "systemd"]},
            "nginx_binary": {"type": "path", "default": "/usr/sbin/nginx"},
            "nginx_configs": {"type": "list", "elements": "dict", "default": [], "options": {
                "name": {"type": "str", "required": True},
                "path": {"type": "path", "required": True},
            }},
            "redis_config": {"type": "path"},
            "redis_port": {"type": "int"},
            "catalog": {"type": "path"},
            "lua_dir": {"type": "path"},
            "preflight": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    checks = run_checks(module.params)
    module.exit_json(changed=False, checks=checks,
                     failed_checks=[item["name"] for item in checks if item["status"] == "fail"])


if __name__ == "__main__":
    main()
