# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The observations behind the gateway_health module, one function per kind of check.

Each function returns a list of checks in the shape of _checks.make_check. Nothing here
changes the host: HTTP GETs of health pages, Redis PING/INFO/SCAN/PTTL, DNS look-ups, TCP and
TLS handshakes, ``ss``, ``supervisorctl status``, ``systemctl show``, ``nginx -t`` and reading
files. Evidence never carries a password, a request body or a value stored in Redis.
"""

import hashlib
import json
import os
import re
import socket
import ssl
import time
from datetime import datetime, timedelta
from itertools import islice
from urllib.error import HTTPError  # what open_url raises for an HTTP error status
from urllib.parse import urlsplit

from ansible.module_utils.urls import open_url
from ansible_collections.aws_masking.gateway.plugins.module_utils._checks import make_check
from ansible_collections.aws_masking.gateway.plugins.module_utils._mapping_store import (
    MappingStore,
    MappingStoreError,
    connection_argument_spec,
)

MEMORY_WARN = 0.80
MEMORY_FAIL = 0.95
ERROR_LEVELS = ("error", "crit", "alert", "emerg")
NGINX_LOG_LINE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\]")
LOG_TAIL_BYTES = 1024 * 1024


def _reason(exc):
    """The class of a network error, without anything the peer sent."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}"[:200]


def http_get(url, timeout):
    """(status, parsed JSON or None, error). status is None when nothing answered."""
    try:
        response = open_url(url, method="GET", timeout=timeout, follow_redirects="none")
        status, raw = response.getcode(), response.read()
    except HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:  # URLError, ssl.SSLError and socket errors alike
        return None, None, _reason(exc)
    try:
        return status, json.loads(raw), None
    except ValueError:
        return status, None, None


# -- HTTP health pages -------------------------------------------------------------------------

def edge_checks(edge_url, timeout):
    url = edge_url.rstrip("/") + "/health"
    status, body, error = http_get(url, timeout)
    if status == 200 and isinstance(body, dict) and body.get("status") == "healthy":
        return [make_check("edge_health", "pass", f"GET {url}: 200 healthy", "startup_health")]
    evidence = f"GET {url}: " + (error or f"{status} {_field(body, 'status')}")
    return [make_check(
        "edge_health", "fail", evidence, "nginx_proxy" if status is None else "startup_health",
        "Start the edge (playbooks/restart.yml -e restart_service=edge) and read its error log "
        "(playbooks/diagnostics.yml).")]


def _field(body, key):
    return str(body.get(key)) if isinstance(body, dict) and key in body else "(no JSON status)"


def gateway_status_checks(status_url, timeout):
    status, body, error = http_get(status_url, timeout)
    if status == 200 and _field(body, "status") == "healthy":
        return [make_check("gateway_status", "pass",
                           f"GET {status_url}: 200 healthy, store ok", "gateway_admin")]
    if status == 503:
        return [make_check(
            "gateway_status", "fail",
            f"GET {status_url}: 503 {_field(body, 'status')}, store "
            f"{_field(body, 'store')}: the gateway cannot reach or authenticate to Redis",
            "redis_connection",
            "Check the redis_ping and gateway_redis checks; start Redis or redeploy the gateway "
            "so its password matches.")]
    evidence = f"GET {status_url}: " + (error or f"{status} {_field(body, 'status')}")
    return [make_check(
        "gateway_status", "fail", evidence, "gateway_admin",
        "Start the gateway (playbooks/restart.yml -e restart_service=gateway) and check its "
        "configuration (playbooks/validate.yml).")]


# -- Redis -------------------------------------------------------------------------------------

def _connect_params(overrides):
    params = {name: spec.get("default") for name, spec in connection_argument_spec().items()}
    params.update({key: value for key, value in overrides.items() if value is not None})
    return params


def redis_checks(params, key_sample):
    """PING with AUTH, memory against maxmemory, masker keys without a TTL in a sample."""
    where = f"{params['host']}:{params['port']}/{params['database']}"
    try:
        store = MappingStore.connect(params)
    except MappingStoreError as exc:
        return [make_check(
            "redis_ping", "fail", str(exc), "redis_connection",
            "Start Redis (playbooks/restart.yml -e restart_service=redis) or check its password "
            "file; the gateway refuses every request until it answers.")]
    checks = [make_check("redis_ping", "pass", f"AUTH and PING at {where}: PONG",
                         "redis_connection")]
    try:
        memory = store.memory()
        sample = list(islice(store.walk(), key_sample))
    except MappingStoreError as exc:
        return [*checks, make_check("redis_memory", "fail", str(exc), "redis_memory",
                                    "Read the Redis log (playbooks/diagnostics.yml).")]
    checks.append(_memory_check(memory))
    without_ttl = sum(1 for _key, pttl in sample if pttl == -1)
    evidence = f"{without_ttl} of {len(sample)} sampled masker keys have no TTL"
    checks.append(make_check(
        "redis_keys_ttl", "fail" if without_ttl else "pass", evidence, "redis_memory",
        "Give them one: playbooks/mappings.yml -e mappings_action=expire."))
    return checks


def _memory_check(memory):
    used, limit = memory.get("used_memory") or 0, memory.get("maxmemory") or 0
    evidence = (f"used_memory {memory.get('used_memory_human')} of maxmemory "
                f"{memory.get('maxmemory_human')} ({memory.get('maxmemory_policy')}), "
                f"evicted_keys {memory.get('evicted_keys')}")
    remedy = ("Expire or flush old mappings (playbooks/mappings.yml) or raise redis_maxmemory "
              "and redeploy.")
    if not limit:
        return make_check("redis_memory", "warn", evidence + ": no memory limit", "redis_memory",
                          "Set redis_maxmemory and redeploy.")
    ratio = used / limit
    status = "fail" if ratio >= MEMORY_FAIL else "warn" if ratio >= MEMORY_WARN else "pass"
    return make_check("redis_memory", status, f"{evidence}: {ratio:.0%} used", "redis_memory",
                      remedy)


def gateway_redis_checks(config_path):
    """Connects to Redis with the settings the gateway reads (its masker.json), AUTH and PING."""
    try:
        with open(config_path, encoding="utf-8") as handle:
            redis_conf = json.load(handle)["redis"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [make_check("gateway_redis", "fail",
                           f"cannot read the gateway's Redis settings in {config_path}: "
                           f"{type(exc).__name__}", "startup_config",
                           "Redeploy the gateway role (playbooks/deploy.yml).")]
    params = _connect_params({
        "host": redis_conf.get("host"), "port": redis_conf.get("port"),
        "password": redis_conf.get("password"), "database": redis_conf.get("database"),
        "connect_timeout": (redis_conf.get("connect_timeout_ms") or 1000) / 1000.0,
    })
    try:
        MappingStore.connect(params).client.close()
    except MappingStoreError as exc:
        return [make_check(
            "gateway_redis", "fail", f"with the settings in {config_path}: {exc}",
            "redis_connection",
            "Redeploy the gateway role so masker.json holds the Redis host's password "
            "(playbooks/deploy.yml), or start Redis.")]
    return [make_check("gateway_redis", "pass",
                       f"AUTH and PING with the settings in {config_path}: PONG",
                       "redis_connection")]


# -- the upstream ------------------------------------------------------------------------------

def upstream_checks(upstream_url, timeout, tls_verify=True, ca_file=None):
    """DNS, TCP connect and (https) the TLS handshake from this host to the upstream."""
    parts = urlsplit(upstream_url)
    host, scheme = parts.hostname, parts.scheme
    port = parts.port or (443 if scheme == "https" else 80)
    remedy = ("Check DNS, firewall and egress from this host to the upstream (guide section 2); "
              "nginx cannot use an HTTP proxy.")
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)})
    except OSError as exc:
        return [make_check("upstream_dns", "fail", f"{host}: {_reason(exc)}",
                           "network_external", remedy)]
    checks = [make_check("upstream_dns", "pass", f"{host} resolves to {', '.join(addresses)}",
                         "network_external")]
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return [*checks, make_check("upstream_tcp", "fail", f"{host}:{port}: {_reason(exc)}",
                                    "network_external", remedy)]
    with sock:
        checks.append(make_check(
            "upstream_tcp", "pass",
            f"{host}:{port} accepts connections ({(time.monotonic() - started) * 1000:.0f} ms)",
            "network_external"))
        if scheme != "https":
            checks.append(make_check("upstream_tls", "skip",
                                     f"{scheme}:// upstream: no TLS to check", "tls"))
            return checks
        context = ssl.create_default_context(cafile=ca_file or None)
        if not tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                version = tls.version()
                expires = (tls.getpeercert() or {}).get("notAfter", "unknown")
        except (ssl.SSLError, OSError) as exc:
            return [*checks, make_check(
                "upstream_tls", "fail", f"TLS handshake with {host}:{port}: {_reason(exc)}",
                "tls", "Check the CA bundle (gateway_upstream_ca_file) and the host's clock.")]
    checks.append(make_check("upstream_tls", "pass",
                             f"{version} with {host}, certificate valid until {expires}", "tls"))
    return checks


# -- processes, ports, configuration, plugin files, logs -------------------------------------

SS_USER = re.compile(r'\("([^"]+)",pid=(\d+)')


def listeners(run_command):
    """{port: [(address, [process names])]} of listening TCP sockets, from ``ss -Hltnp``."""
    rc, out, _err = run_command(["ss", "-Hltnp"])
    found = {}
    if rc != 0:
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _sep, port = fields[3].rpartition(":")
        if not port.isdigit():
            continue
        names = sorted({match.group(1) for match in SS_USER.finditer(line)})
        found.setdefault(int(port), []).append((address.strip("[]"), names))
    return found


def port_checks(ports, run_command):
    table = listeners(run_command)
    checks = []
    for entry in ports:
        name, port, process = entry["name"], entry["port"], entry.get("process")
        check_name = f"port_{name}"
        if table is None:
            checks.append(make_check(check_name, "skip", "ss could not list the listening "
                                     "sockets", "startup_ports"))
            continue
        holders = table.get(port, [])
        owners = sorted({owner for _address, names in holders for owner in names})
        where = ", ".join(sorted({address for address, _names in holders}))
        if not holders:
            checks.append(make_check(
                check_name, "fail", f"nothing listens on port {port}", "startup_restarting",
                f"Start {name} (playbooks/restart.yml) and read its log."))
        elif process and owners and process not in owners:
            checks.append(make_check(
                check_name, "fail",
                f"port {port} on {where} is held by {', '.join(owners)}, not {process}",
                "startup_ports",
                f"Stop the process holding port {port}, or move {name} to another port, then "
                "restart it."))
        else:
            checks.append(make_check(
                check_name, "pass",
                f"{', '.join(owners) or 'a process'} listens on {where}:{port}", "startup_ports"))
    return checks


SUPERVISOR_LINE = re.compile(r"^(\S+)\s+([A-Z]+)\s*(.*)$")
PID_RE = re.compile(r"pid (\d+)")
UPTIME_RE = re.compile(r"uptime ([0-9:]+(?: days?, [0-9:]+)?)")


def program_states(programs, manager, run_command):
    """{name: {state, pid, uptime, rss_kb}}: what the service manager reports of each program."""
    states = {}
    for name in programs:
        state = {"state": "UNKNOWN", "pid": None, "uptime": None, "rss_kb": None}
        if manager == "systemd":
            _rc, out, _err = run_command(["systemctl", "show", name, "-p", "ActiveState",
                                          "-p", "MainPID", "-p", "ActiveEnterTimestamp"])
            props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            active = props.get("ActiveState", "unknown")
            state["state"] = "RUNNING" if active == "active" else active.upper()
            pid = props.get("MainPID", "0")
            state["pid"] = int(pid) if pid.isdigit() and pid != "0" else None
            state["uptime"] = props.get("ActiveEnterTimestamp") or None
        else:
            _rc, out, err = run_command(["supervisorctl", "status", name])
            match = SUPERVISOR_LINE.match(out.strip().splitlines()[0] if out.strip() else "")
            if match and match.group(1) == name:
                state["state"] = match.group(2)
                pid, uptime = PID_RE.search(match.group(3)), UPTIME_RE.search(match.group(3))
                state["pid"] = int(pid.group(1)) if pid else None
                state["uptime"] = uptime.group(1) if uptime else None
            else:
                state["state"] = "UNKNOWN"
                state["error"] = (out.strip() or err.strip())[:200]
        if state["pid"]:
            state["rss_kb"] = _rss_kb(state["pid"])
        states[name] = state
    return states


def _rss_kb(pid):
    """Resident memory of a process and its children (nginx workers, ...), in KiB."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            pids += [int(child) for child in handle.read().split()]
    except OSError:
        pass
    for one in pids:
        try:
            with open(f"/proc/{one}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def program_checks(states):
    checks = []
    for name, state in states.items():
        if state["state"] == "RUNNING":
            evidence = f"RUNNING pid {state['pid']}, uptime {state['uptime']}"
            checks.append(make_check(f"program_{name}", "pass", evidence, "startup_restarting"))
        else:
            evidence = f"{state['state']}" + (f": {state['error']}" if state.get("error") else "")
            checks.append(make_check(
                f"program_{name}", "fail", evidence, "startup_restarting",
                f"Start it (playbooks/restart.yml) and read its log: {name} does not run."))
    return checks


def config_checks(configs, run_command):
    """``nginx -t -q -c`` of each rendered configuration (edge: section 5, gateway: section 3)."""
    checks = []
    for entry in configs:
        name, path = entry["name"], entry["path"]
        section = "nginx_proxy" if entry.get("tier") == "edge" else "gateway_admin"
        rc, out, err = run_command([entry.get("binary") or "/usr/sbin/nginx", "-t", "-q",
                                    "-c", path])
        if rc == 0:
            checks.append(make_check(f"config_{name}", "pass", f"nginx -t -c {path}: ok",
                                     section))
            continue
        # nginx names the file, the line and the directive; it never echoes values of ours.
        first = next((line for line in (err + out).splitlines() if "[emerg]" in line
                      or "[alert]" in line), (err + out).strip()[:200])
        checks.append(make_check(
            f"config_{name}", "fail", f"nginx -t -c {path}: {first.strip()[:300]}", section,
            "Redeploy the rendered configuration (playbooks/deploy.yml), or roll back "
            "(playbooks/rollback.yml)."))
    return checks


def sha1_file(path):
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def plugin_checks(plugin_dir, expected):
    """The deployed Lua tree against the collection's checksums ({relative path: sha1})."""
    missing, changed = [], []
    for relative, checksum in sorted(expected.items()):
        path = os.path.join(plugin_dir, relative)
        try:
            if sha1_file(path) != checksum:
                changed.append(relative)
        except OSError:
            missing.append(relative)
    if not missing and not changed:
        return [make_check("plugin_files", "pass",
                           f"{len(expected)} files in {plugin_dir} match the collection",
                           "plugin")]
    parts = [f"{len(changed)} differ ({', '.join(changed[:5])})"] if changed else []
    parts += [f"{len(missing)} missing ({', '.join(missing[:5])})"] if missing else []
    return [make_check(
        "plugin_files", "fail", f"of {len(expected)} files in {plugin_dir}: " + "; ".join(parts),
        "plugin", "Redeploy the gateway role (playbooks/deploy.yml), then restart the gateway.")]


def log_checks(paths, window_minutes, now=None):
    """Lines at level error or worse in the last window_minutes of nginx error logs: counts only
    (a line can hold a request line, and so an identifier)."""
    now = now or datetime.now()
    since = now - timedelta(minutes=window_minutes)
    per_file = []
    total = 0
    for path in paths:
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
                lines = handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            per_file.append(f"{os.path.basename(path)}: unreadable")
            continue
        errors = 0
        for line in lines:
            match = NGINX_LOG_LINE.match(line)
            if not match or match.group(2) not in ERROR_LEVELS:
                continue
            if datetime.strptime(match.group(1), "%Y/%m/%d %H:%M:%S") >= since:
                errors += 1
        total += errors
        per_file.append(f"{os.path.basename(path)}: {errors}")
    evidence = f"errors in the last {window_minutes} min: " + ", ".join(per_file)
    return [make_check(
        "recent_errors", "warn" if total else "pass", evidence, "logs",
        "Read the lines (playbooks/diagnostics.yml collects them with identifiers masked).")]
