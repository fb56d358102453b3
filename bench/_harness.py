"""Private processes for the gateway's tests and benchmarks: a redis-server and an nginx running
the gateway's Lua (lua/aws_masker/nginx.lua) on free loopback ports, in a directory of their own.

Nothing here touches the deployed stack: every process listens on a port the kernel just handed
out and writes only under the directory it is given.
"""

import contextlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MODULES = Path("/usr/lib/nginx/modules")
REDIS_PASSWORD = "test-redis-password"
SCOPE_SECRET = "a-test-scope-secret-of-32-chars!"
API_KEY = "sk-ant-test-key-1"


def available():
    """Whether nginx with the Lua module and redis-server are installed."""
    return bool(shutil.which("nginx") and shutil.which("redis-server")
                and (MODULES / "ngx_http_lua_module.so").exists())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def user_line():
    # Workers of a root master run as nobody, who cannot enter pytest's 0700 directories.
    return "user root;" if os.geteuid() == 0 else ""


def temp_paths(tmp):
    return "\n".join(f"  {name}_temp_path {tmp}/{name};"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def start_nginx(tmp, conf_text, port, what="nginx", conf_name="nginx.conf"):
    """Writes conf_text to tmp/conf_name, starts nginx on it in the foreground and waits until
    it listens on port. Returns the master's Popen (its stderr is a pipe)."""
    conf = Path(tmp) / conf_name
    conf.write_text(conf_text)
    proc = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc, what)
    except RuntimeError:
        stop(proc)
        raise
    return proc


def start_redis(tmp):
    """A private redis-server with a password and no persistence. Returns (Popen, port)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "redis-server")
    except RuntimeError:
        stop(proc)
        raise
    return proc, port


def catalog_json(tmp):
    """The shipped catalog converted to JSON (what the role renders), written under tmp."""
    path = Path(tmp) / "aws_patterns.json"
    path.write_text(json.dumps(yaml.safe_load((REPO / "catalog" / "aws_patterns.yml").read_text())))
    return path


def run_lua_in_init(tmp, script, timeout=300):
    """Runs a Lua file in the init phase of a one-process nginx with the gateway's modules on
    its path (ngx.re, cjson, aws_masker.*), then nginx stops. Returns the CompletedProcess."""
    tmp = Path(tmp)
    (tmp / "logs").mkdir(exist_ok=True)
    conf = tmp / "init-nginx.conf"
    conf.write_text(
        f"load_module {MODULES}/ndk_http_module.so;\n"
        f"load_module {MODULES}/ngx_http_lua_module.so;\n"
        f"pid {tmp}/init-nginx.pid;\nerror_log stderr notice;\nevents {{}}\n"
        f'http {{ lua_package_path "{REPO}/lua/?.lua;;"; init_by_lua_file {script}; }}\n')
    return subprocess.run(["nginx", "-p", str(tmp), "-c", str(conf), "-g",
                           "daemon off; master_process off;"],
                          capture_output=True, text=True, timeout=timeout, check=False)


GATEWAY_CONF = """
{user}
load_module {modules}/ndk_http_module.so;
load_module {modules}/ngx_http_lua_module.so;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log {log_level};
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp_paths}

  lua_package_path "{repo}/lua/?.lua;;";
  lua_shared_dict aws_masker_stats 1m;
  init_by_lua_block {{ require("aws_masker.nginx").init("{tmp}/aws_masker.json") }}
  init_worker_by_lua_block {{ require("aws_masker.nginx").init_worker() }}

  upstream anthropic {{
    server 127.0.0.1:{upstream_port};
    keepalive {keepalive};
  }}

  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    client_max_body_size {max_body};
    client_body_buffer_size {body_buffer};
    error_page 413 = @aws_masker_413;
    error_page 500 = @aws_masker_500;
    error_page 502 = @aws_masker_502;
    error_page 504 = @aws_masker_504;

    location /v1/ {{
      access_by_lua_block {{ require("aws_masker.nginx").access() }}
      header_filter_by_lua_block {{ require("aws_masker.nginx").header_filter() }}
      body_filter_by_lua_block {{ require("aws_masker.nginx").body_filter() }}
      log_by_lua_block {{ require("aws_masker.nginx").log() }}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Accept-Encoding "";
      proxy_buffering off;
      proxy_pass http://anthropic;
    }}
{extra_locations}
    location @aws_masker_413 {{
      content_by_lua_block {{ require("aws_masker.nginx").error_page(413) }}
    }}
    location @aws_masker_500 {{
      content_by_lua_block {{ require("aws_masker.nginx").error_page(500) }}
    }}
    location @aws_masker_502 {{
      content_by_lua_block {{ require("aws_masker.nginx").error_page(502) }}
    }}
    location @aws_masker_504 {{
      content_by_lua_block {{ require("aws_masker.nginx").error_page(504) }}
    }}

    location = /aws-masker/status {{
      allow 127.0.0.1;
      deny all;
      content_by_lua_block {{ require("aws_masker.nginx").status() }}
    }}
  }}
}}
"""

# The same proxying as the gateway's /v1/ location without any Lua phase: the baseline the
# benchmarks compare the gateway with (requests to /plain/v1/... reach the upstream as /v1/...).
PLAIN_LOCATION = """
    location /plain/ {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Accept-Encoding "";
      proxy_buffering off;
      proxy_pass http://anthropic/;
    }
"""


@contextlib.contextmanager
def running_gateway(tmp_path, upstream_port, max_body=64 * 1024, body_buffer=None,
                    workers=2, keepalive=4, log_level="notice", extra_locations="",
                    redis_settings=None, **overrides):
    """A private redis-server and the gateway's nginx in front of 127.0.0.1:upstream_port.

    overrides replace keys of the gateway's JSON configuration, redis_settings keys of its
    redis table. Yields a dict: url, port,
    nginx (the master's Popen), redis (Popen), redis_port, log (the error log's path).
    Raises RuntimeError when nginx does not start (a bad configuration stops it)."""
    tmp_path = Path(tmp_path)
    procs = []
    try:
        redis_proc, redis_port = start_redis(tmp_path)
        procs.append(redis_proc)
        config = {
            "catalog_path": str(catalog_json(tmp_path)),
            "redis": {"host": "127.0.0.1", "port": redis_port, "password": REDIS_PASSWORD,
                      "database": 0, "connect_timeout_ms": 500, "send_timeout_ms": 500,
                      "read_timeout_ms": 1000, "pool_size": 8, "keepalive_ms": 10000,
                      **(redis_settings or {})},
            "mapping_ttl_seconds": 3600,
            "scope_secret": SCOPE_SECRET,
            "max_body_bytes": max_body,
            "fail_mode": "closed",
            **overrides,
        }
        (tmp_path / "aws_masker.json").write_text(json.dumps(config))
        port = free_port()
        nginx = start_nginx(tmp_path, GATEWAY_CONF.format(
            user=user_line(), modules=MODULES, tmp=tmp_path, repo=REPO, workers=workers,
            log_level=log_level, temp_paths=temp_paths(tmp_path), upstream_port=upstream_port,
            keepalive=keepalive, port=port, max_body=max_body,
            body_buffer=body_buffer or max_body, extra_locations=extra_locations), port)
        procs.append(nginx)
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "nginx": nginx,
               "redis": redis_proc, "redis_port": redis_port, "log": tmp_path / "error.log"}
    finally:
        for proc in reversed(procs):
            stop(proc)


LOG_RE = re.compile(r"aws_masker status=(\d+) .*?scan_ms=([\d.]+) store_ms=([\d.]+) "
                    r"mask_ms=([\d.]+)")


def log_figures(log, offset):
    """Averages of scan_ms, store_ms and mask_ms (the gateway's log line: from the start of
    the access phase to the end of the scan, the store call alone, and to the masked body)
    over the gateway's log lines after byte offset of its error log."""
    with open(log, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", "replace")
    rows = [tuple(float(x) for x in m.groups()[1:]) for m in LOG_RE.finditer(text)]
    if not rows:
        return {}
    return {name: round(statistics.fmean(r[i] for r in rows), 3)
            for i, name in enumerate(("scan_ms", "store_ms", "mask_ms"))} | {"lines": len(rows)}


def worker_pids(master_pid):
    """The pids of an nginx master's worker processes (its children), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces, the last ")" ends it
            if int(stat.rsplit(")", 1)[1].split()[1]) == master_pid:
                pids.append(int(entry.name))
    return sorted(pids)


def rss_kib(pid):
    """Resident set size of a process in KiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ------------------------------------------------------------------ synthetic conversations

FILLER = [
    "The deployment finished but the health checks kept failing for a while.",
    "Here is the output of the command you asked for, trimmed to the relevant part.",
    "Can you explain why the service cannot reach the database from the private network?",
    "I restarted the workers and the queue drained within a few minutes.",
    "The logs show timeouts every thirty seconds, then the connection pool recovers.",
    "Thanks, that worked. Next question: how should the routing be arranged for staging?",
]


def identifier(kind, n):
    """A distinct AWS identifier of one of six kinds, numbered n (the same n gives the same)."""
    kind %= 6
    if kind == 0:
        return f"i-{n:017x}"
    if kind == 1:
        return f"vpc-{n:08x}"
    if kind == 2:
        return f"subnet-{n:017x}"
    if kind == 3:
        return f"sg-{n:017x}"
    if kind == 4:
        return f"arn:aws:iam::{100000000000 + n:012d}:role/bench-{n}"
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}"


def conversation(size, identifiers, first=1, seed=7):
    """A Messages API request body (JSON bytes) of about size bytes: alternating user and
    assistant turns of prose with `identifiers` distinct identifiers (numbered from first), each
    appearing once, spread evenly. Turns are about 2 KB."""
    rng = random.Random(seed)
    ids = [identifier(k, first + k) for k in range(identifiers)]
    messages, used, total = [], 0, 0
    turns = max(1, size // 2048)
    per_turn = [len(ids) * (t + 1) // turns - len(ids) * t // turns for t in range(turns)]
    for t in range(turns):
        words = []
        for _ in range(per_turn[t]):
            words.append(rng.choice(FILLER))
            words.append(f"Look at {ids[used]} now.")
            used += 1
        text = " ".join(words)
        budget = min(2048, size - total) - 60
        while len(text) < budget:
            text += " " + rng.choice(FILLER)
        messages.append({"role": "user" if t % 2 == 0 else "assistant", "content": text})
        total += len(text) + 60
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "Go on."})
    return json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                       "messages": messages}).encode()


# ------------------------------------------------------------------ a fast canned upstream

UPSTREAM_CONF = """
{user}
worker_processes 1;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp_paths}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    client_max_body_size 8m;
    client_body_buffer_size 8m;
    location /v1/ {{
      error_page 418 = @stream;
      if ($http_x_bench_stream) {{ return 418; }}
      default_type application/json;
      return 200 '{json_answer}';
    }}
    location @stream {{
      default_type text/event-stream;
      return 200 '{sse_answer}';
    }}
  }}
}}
"""

ANSWER_TEXT = ("Instance AWS_EC2_000001 in AWS_VPC_000001 is healthy; the security group allows "
               "the health checks and the load balancer reports every target as in service.")


def canned_json():
    """A Messages API answer naming two tokens (what the gateway restores)."""
    return json.dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": ANSWER_TEXT}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 100, "output_tokens": 40}})


def canned_sse():
    """The same answer as an event stream, its text in deltas of about 16 bytes."""
    def event(name, data):
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"
    start = {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "content": []}}
    block = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}}
    events = [event("message_start", start), event("content_block_start", block)]
    for i in range(0, len(ANSWER_TEXT), 16):
        events.append(event("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": ANSWER_TEXT[i:i + 16]}}))
    events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(event("message_stop", {"type": "message_stop"}))
    return "".join(events)


@contextlib.contextmanager
def canned_upstream(tmp_path):
    """An nginx (one worker, no Lua) answering every POST under /v1/ with canned_json(), or
    with canned_sse() when the request carries X-Bench-Stream: 1. Yields its port."""
    port = free_port()
    conf = UPSTREAM_CONF.format(user=user_line(), tmp=tmp_path, port=port,
                                temp_paths=temp_paths(tmp_path),
                                json_answer=canned_json(), sse_answer=canned_sse())
    proc = start_nginx(tmp_path, conf, port, "upstream nginx", conf_name="upstream.conf")
    try:
        yield port
    finally:
        stop(proc)


@contextlib.contextmanager
def bench_stack(tmp, max_body=2 * 1024 * 1024):
    """The benchmarks' processes: canned_upstream, and the gateway (2 workers, the role's
    upstream keepalive and Redis pool) with PLAIN_LOCATION beside it. Yields running_gateway's
    dict."""
    with canned_upstream(Path(tmp)) as upstream_port, running_gateway(
            tmp, upstream_port, max_body=max_body, workers=2, keepalive=32,
            extra_locations=PLAIN_LOCATION,
            redis_settings={"pool_size": 32, "keepalive_ms": 60000}) as gw:
        yield gw


# ------------------------------------------------------------------ command line and output

def arguments(description):
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: small counts, for smoke tests (figures are rough)")
    parser.add_argument("--results", default=str(REPO / "bench" / "results"),
                        help="directory for the raw results (JSON); default bench/results")
    return parser


def write_results(directory, name, data):
    """Writes data as JSON to <directory>/<name>-<UTC time>.json and returns the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{name}-{stamp}.json"
    path.write_text(json.dumps({"benchmark": name, "measured_utc": stamp, "machine": machine(),
                                **data}, indent=2) + "\n")
    return path


def machine():
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "cpu": cpu, "load_average_at_end": [round(x, 2) for x in load],
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True,
                                    check=False).stderr.strip()}


def print_table(title, headers, rows):
    """Prints rows (lists of str) under headers as a Markdown table, after a title line."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    print(f"\n{title}\n")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
