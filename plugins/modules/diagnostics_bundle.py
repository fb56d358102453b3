#!/usr/bin/python
# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: diagnostics_bundle
short_description: Collects the guide's "information to collect" into one sanitised archive
version_added: 0.1.0
description:
  - Gathers, on the host, what the troubleshooting guide's "Support Escalation / Information to
    Collect" asks for - versions, service states, resource usage, the recent lines of every log,
    the rendered configurations, Redis C(INFO) (never a key or a value), the health endpoints'
    answers and network checks - and writes them as one C(.tar.gz) (mode 0600).
  - Everything is sanitised before it is written, so only sanitised content ever leaves the
    host. First every secret is removed - the values of I(secret_files), C(requirepass), JSON
    C(password)/C(secret)/C(api_key) fields, C(Authorization) and C(x-api-key) values,
    C(sk-ant-) keys. Then every AWS identifier is replaced by a token (C(AWS_EC2_000001), ...)
    by the Python twin of the gateway's masking engine, with one token table for the whole
    archive so a value has the same token in every file. A final scan with the same engine
    must find nothing; otherwise the module fails and writes nothing (fail closed).
  - Running it changes nothing on the host but the archive at I(dest), which is output, not
    state; it reports C(changed=false).
author:
  - AWS masking gateway maintainers (!UNKNOWN)
extends_documentation_fragment:
  - aws_masking.gateway.attributes
attributes:
  check_mode:
    support: full
    details: Collects and sanitises, writes no archive.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Only reads the host; the archive is output.
options:
  dest:
    description: Archive to write on the host (overwritten).
    type: path
    required: true
  catalog:
    description: Pattern catalog the masking uses (the gateway's deployed JSON, or YAML).
    type: path
    default: /etc/aws-masking-gateway/gateway/aws_patterns.json
  log_dir:
    description: Every C(*.log) file in this directory is collected (its last I(log_lines) lines).
    type: path
    default: /var/log/aws-masking-gateway
  log_lines:
    description: Lines kept from the end of each log.
    type: int
    default: 200
  config_files:
    description: Configuration files to collect (missing ones are noted).
    type: list
    elements: path
    default: []
  secret_files:
    description: Files whose contents are secrets; those values are removed wherever they appear.
    type: list
    elements: path
    default: []
  secret_dirs:
    description: Directories whose every file holds a secret, removed like those of I(secret_files).
    type: list
    elements: path
    default: []
  packages:
    description: Debian packages whose installed versions are reported.
    type: list
    elements: str
    default: []
  programs:
    description: Service manager programs whose state and resource usage are reported.
    type: list
    elements: str
    default: []
  service_manager:
    description: How the programs run.
    type: str
    choices: [supervisor, systemd]
    default: supervisor
  health_urls:
    description: Name to URL of health endpoints whose answers are collected.
    type: dict
    default: {}
  ports:
    description: C(host:port) strings probed with a TCP connect.
    type: list
    elements: str
    default: []
  resolve:
    description: Host names whose DNS resolution is reported (the upstream API host).
    type: list
    elements: str
    default: []
  redis:
    description: Where Redis C(INFO) is read with C(redis-cli); omit on hosts without Redis.
    type: dict
    suboptions:
      host:
        description: Address.
        type: str
        default: 127.0.0.1
      port:
        description: Port.
        type: int
        default: 6379
      password_file:
        description: File holding the password (passed in the environment, not on the command line).
        type: path
  collection_version:
    description: The collection's version, reported with the others.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: The diagnostics are collected and sanitised on the host
  aws_masking.gateway.diagnostics_bundle:
    dest: /var/tmp/aws-masking-diagnostics.tar.gz
    config_files:
      - /etc/aws-masking-gateway/edge/nginx.conf
    secret_files:
      - /etc/aws-masking-gateway/secrets/redis_password
    programs: [aws-masking-redis, aws-masking-gateway, aws-masking-edge]
    health_urls:
      edge: http://127.0.0.1:8085/health
    redis:
      password_file: /etc/aws-masking-gateway/secrets/redis_password
"""

RETURN = r"""
dest:
  description: The archive written; null in check mode.
  returned: success
  type: str
files:
  description: Names of the files in the archive.
  returned: success
  type: list
  elements: str
masked:
  description: AWS identifiers replaced by tokens, per type, over the whole archive.
  returned: success
  type: dict
  sample: {EC2_INSTANCE_ID: 3}
redacted:
  description: Secrets removed, over the whole archive.
  returned: success
  type: int
"""

import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tarfile
import time
from collections import Counter, deque

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.error import HTTPError
from ansible.module_utils.urls import open_url
from ansible_collections.aws_masking.gateway.plugins.module_utils.aws_masker_engine import (
    TOKEN_RE,
    Catalog,
    CatalogError,
    InMemoryTokenizer,
    MaskingEngine,
    count_by_type,
    repeated_originals,
)

try:
    import psutil
except ImportError:  # resource usage falls back to ps
    psutil = None

REDACTED = "[REDACTED]"
# (pattern, replacement): secrets recognised by their place, whatever their value.
SECRET_PATTERNS = [
    (re.compile(r"(?im)^(\s*(?:requirepass|masterauth)\s+)\S.*$"), r"\1" + REDACTED),
    (re.compile(r'(?i)("[a-z_]*(?:password|secret|api_key|apikey|token)"\s*:\s*)"[^"]*"'),
     r'\1"' + REDACTED + '"'),
    (re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key)([\"']?\s*[:=]\s*[\"']?)"
                r"((?:bearer|basic)\s+)?[^\s\"',;]+"), r"\1\2\3" + REDACTED),
    (re.compile(r"sk-ant-[A-Za-z0-9_-]+"), REDACTED),
    (re.compile(r"(?i)\b(REDISCLI_AUTH=)\S+"), r"\1" + REDACTED),
]


class Sanitiser:
    """Secrets out, AWS identifiers masked, with one token table for every file.

    A value the engine finds in one file is masked wherever it stands in the others too, as
    the gateway does within one request: a name recognised from its context in one log is
    no less sensitive in a log where the context is missing.
    """

    def __init__(self, engine, secrets):
        self.engine = engine
        # Longest first, so a secret containing another is removed whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self.tokenizer = InMemoryTokenizer()
        self.masked = Counter()
        self.redacted = 0

    def redact(self, text):
        for secret in self.secrets:
            self.redacted += text.count(secret)
            text = text.replace(secret, REDACTED)
        for pattern, replacement in SECRET_PATTERNS:
            text, count = pattern.subn(replacement, text)
            self.redacted += count
        return text

    def mask(self, text, originals):
        matches = repeated_originals(text, self.engine.catalog.scan(text), originals)
        self.masked.update(count_by_type(matches))
        pieces, cursor = [], 0
        for match in matches:
            pieces.append(text[cursor:match.start])
            pieces.append(self.tokenizer.token_for(match))
            cursor = match.end
        pieces.append(text[cursor:])
        return "".join(pieces)

    def __call__(self, files):
        """name -> text, sanitised; raises ValueError when an identifier is left."""
        redacted = {name: self.redact(text) for name, text in files.items()}
        originals = {}
        for text in redacted.values():
            for match in self.engine.scan(text):
                originals.setdefault(match.value, match)
        masked = {name: self.mask(text, originals) for name, text in redacted.items()}
        for name, text in masked.items():
            # The catalog knows the tokens too (a client may send one back): no finding.
            left = [m for m in self.engine.scan(text) if not TOKEN_RE.fullmatch(m.value)]
            if left:
                raise ValueError(f"{len(left)} identifier(s) still found in {name} after "
                                 "masking")
        return masked


def run(command, env=None, timeout=20):
    if not shutil.which(command[0]):
        return f"$ {' '.join(command)}\n{command[0]} is not installed\n"
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=timeout, env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired:
        return f"$ {' '.join(command)}\ntimed out after {timeout} s\n"
    return f"$ {' '.join(command)}\n{done.stdout}{done.stderr}(exit {done.returncode})\n"


def tail(path, lines):
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


def versions(params):
    parts = [f"collection aws_masking.gateway {params['collection_version'] or 'unknown'}",
             f"host {platform.node()} {platform.platform()}",
             f"python {platform.python_version()}", ""]
    if params["packages"]:
        parts.append(run(["dpkg-query", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n",
                          *params["packages"]]))
    parts.append(run(["nginx", "-v"]))
    parts.append(run(["redis-server", "--version"]))
    return "\n".join(parts)


def services(params):
    if not params["programs"]:
        return "no programs named\n"
    if params["service_manager"] == "supervisor":
        return run(["supervisorctl", "status", *params["programs"]])
    return run(["systemctl", "status", "--no-pager", "--lines=0", *params["programs"]])


def resources(params):
    out = []
    with open("/proc/loadavg", encoding="ascii") as handle:
        out.append(f"load average: {handle.read().strip()}")
    if psutil is None:
        out.append(run(["ps", "-eo", "pid,ppid,user,pcpu,pmem,rss,etime,comm", "--sort=-pmem"]))
        return "\n".join(out) + "\n"
    memory = psutil.virtual_memory()
    out.append(f"memory: total {memory.total} available {memory.available} "
               f"used {memory.percent}%")
    for path in ("/", "/var/lib", "/var/log"):
        if os.path.exists(path):
            usage = psutil.disk_usage(path)
            out.append(f"disk {path}: {usage.percent}% used, {usage.free} bytes free")
    out.append("")
    out.append("pid ppid user cpu% rss_bytes threads started name")
    for process in psutil.process_iter(["pid", "ppid", "username", "name", "create_time"]):
        info = process.info
        if info["name"] not in ("nginx", "redis-server", "python3", "supervisord"):
            continue
        try:
            cpu = process.cpu_percent(interval=None)
            rss = process.memory_info().rss
            threads = process.num_threads()
        except psutil.Error:
            continue
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info["create_time"]))
        out.append(f"{info['pid']} {info['ppid']} {info['username']} {cpu} {rss} {threads} "
                   f"{started} {info['name']}")
    return "\n".join(out) + "\n"


def health(params):
    out = []
    for name, url in sorted(params["health_urls"].items()):
        started = time.monotonic()
        try:
            resp = open_url(url, method="GET", timeout=5, follow_redirects="none")
            status, body = resp.getcode(), resp.read(4096).decode("utf-8", "replace")
        except HTTPError as err:
            status, body = err.code, err.read(4096).decode("utf-8", "replace")
        except OSError as err:
            status, body = "unreachable", str(err)
        elapsed = int((time.monotonic() - started) * 1000)
        out.append(f"== {name} {url}: {status} in {elapsed} ms\n{body}\n")
    return "\n".join(out) or "no health URLs named\n"


def network(params):
    out = []
    for target in params["ports"]:
        host, _sep, port = target.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
                out.append(f"tcp {target}: open")
        except OSError as err:
            out.append(f"tcp {target}: {err}")
    for name in params["resolve"]:
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(name, 443)})
            out.append(f"dns {name}: {', '.join(addresses)}")
        except OSError as err:
            out.append(f"dns {name}: {err}")
    out.append("")
    out.append(run(["ss", "-ltnp"]))
    return "\n".join(out)


def redis_info(params):
    settings = params["redis"]
    env = {}
    if settings.get("password_file") and os.path.isfile(settings["password_file"]):
        with open(settings["password_file"], encoding="utf-8") as handle:
            env["REDISCLI_AUTH"] = handle.read().strip()
    return run(["redis-cli", "-h", settings["host"], "-p", str(settings["port"]),
                "--no-auth-warning", "info", "everything"], env=env)


def collect(params):
    """name in the archive -> raw text, before sanitising."""
    files = {"versions.txt": versions(params), "services.txt": services(params),
             "resources.txt": resources(params), "health.txt": health(params),
             "network.txt": network(params)}
    if params["redis"]:
        files["redis-info.txt"] = redis_info(params)
    if os.path.isdir(params["log_dir"]):
        for name in sorted(os.listdir(params["log_dir"])):
            path = os.path.join(params["log_dir"], name)
            if name.endswith(".log") and os.path.isfile(path):
                files[f"logs/{name}"] = tail(path, params["log_lines"])
    missing = []
    for path in params["config_files"]:
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as handle:
                files["configs/" + path.strip("/").replace("/", "__")] = handle.read()
        else:
            missing.append(path)
    if missing:
        files["configs/MISSING.txt"] = "\n".join(missing) + "\n"
    return files


def load_engine(path):
    with open(path, encoding="utf-8") as handle:
        if path.endswith(".json"):
            data = json.load(handle)
        else:
            import yaml

            data = yaml.safe_load(handle)
    return MaskingEngine(catalog=Catalog.from_data(data))


def read_secrets(paths):
    secrets = []
    for path in paths:
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as handle:
                value = handle.read().strip()
            if value:
                secrets.append(value)
    return secrets


def write_archive(dest, files):
    folder = os.path.splitext(os.path.splitext(os.path.basename(dest))[0])[0]
    now = int(time.time())
    temporary = dest + ".partial"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mtime, info.mode = len(data), now, 0o600
            archive.addfile(info, io.BytesIO(data))
    os.chmod(temporary, 0o600)
    os.replace(temporary, dest)


def main():
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "catalog": {"type": "path",
                        "default": "/etc/aws-masking-gateway/gateway/aws_patterns.json"},
            "log_dir": {"type": "path", "default": "/var/log/aws-masking-gateway"},
            "log_lines": {"type": "int", "default": 200},
            "config_files": {"type": "list", "elements": "path", "default": []},
            "secret_files": {"type": "list", "elements": "path", "default": [], "no_log": False},
            "secret_dirs": {"type": "list", "elements": "path", "default": [], "no_log": False},
            "packages": {"type": "list", "elements": "str", "default": []},
            "programs": {"type": "list", "elements": "str", "default": []},
            "service_manager": {"type": "str", "default": "supervisor",
                                "choices": ["supervisor", "systemd"]},
            "health_urls": {"type": "dict", "default": {}},
            "ports": {"type": "list", "elements": "str", "default": []},
            "resolve": {"type": "list", "elements": "str", "default": []},
            "redis": {"type": "dict", "options": {
                "host": {"type": "str", "default": "127.0.0.1"},
                "port": {"type": "int", "default": 6379},
                "password_file": {"type": "path", "no_log": False},
            }},
            "collection_version": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        engine = load_engine(params["catalog"])
    except (OSError, ValueError, CatalogError, ImportError) as exc:
        module.fail_json(msg=f"the pattern catalog {params['catalog']} cannot be loaded ({exc}); "
                         "without it AWS identifiers cannot be masked, so nothing is collected")
    secret_files = list(params["secret_files"])
    for directory in params["secret_dirs"]:
        if os.path.isdir(directory):
            secret_files.extend(os.path.join(directory, name)
                                for name in sorted(os.listdir(directory)))
    if params["redis"] and params["redis"].get("password_file"):
        secret_files.append(params["redis"]["password_file"])
    sanitise = Sanitiser(engine, read_secrets(secret_files))
    try:
        files = sanitise(collect(params))
    except ValueError as exc:
        module.fail_json(msg=f"sanitising failed, nothing was written: {exc}")
    files["SANITISED.txt"] = (
        "Secrets removed and AWS identifiers replaced by tokens on the host before this archive "
        f"was written.\nSecrets removed: {sanitise.redacted}\n"
        f"Identifiers masked by type: {json.dumps(dict(sorted(sanitise.masked.items())))}\n")
    dest = None
    if not module.check_mode:
        write_archive(params["dest"], files)
        dest = params["dest"]
    module.exit_json(changed=False, dest=dest, files=sorted(files),
                     masked=dict(sanitise.masked), redacted=sanitise.redacted)


if __name__ == "__main__":
    main()
