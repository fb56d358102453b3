"""Requests per second through the gateway vs the same nginx without the plugin, and the memory
of its workers over a soak.

The private processes are latency.py's: one nginx (2 workers) with the gateway at /v1/ and the
same proxying without Lua at /plain/v1/, a canned upstream nginx and a private Redis. The load
generator is wrk (Debian package wrk): 1, 16 and 64 kept-alive connections (1 or 2 threads),
each point --seconds long, first the plain path then the gateway, for two request bodies: 2 KB
with 5 identifiers and 50 KB with 100 (the same body again and again: the identifiers are known
to Redis after the first request, as in a conversation).

Soak: N requests (100,000; 2,000 with --quick) of 2 KB, each naming 5 identifiers never seen
before, at 16 connections through the gateway. The RSS of every worker (VmRSS from /proc) is
read after a warm-up, then every tenth of the soak; growth is reported over the whole soak and
over its second half (a leak keeps growing, a heap that settles does not).

wrk and nginx share the machine's cores: the figures are those of one host doing both.

    .venv/bin/python bench/throughput.py [--quick]
"""

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import _harness
import redis

CONCURRENCY = (1, 16, 64)
TARGET_RATIO = 0.5

# Prints one JSON line when wrk is done: its own counters and latency percentiles.
WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"connect":%d,"read":%d,'
    .. '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

# Fixed body: wrk builds the request once.
WRK_FIXED = r"""
local f = assert(io.open(BODY_FILE, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = API_KEY
wrk.headers["anthropic-version"] = "2023-06-01"
""" + WRK_DONE

# Soak: every request names 5 new identifiers, numbered by run (RUN), thread and request.
WRK_SOAK = r"""
local threads, counter = {}, 0
id = 0 -- a global: setup() sets it in each thread's own Lua state
function setup(thread)
  thread:set("id", #threads + 1)
  threads[#threads + 1] = thread
end
local headers = { ["Content-Type"] = "application/json", ["x-api-key"] = API_KEY,
  ["anthropic-version"] = "2023-06-01" }
local FILLER = string.rep("The deployment finished and the health checks pass again. ", 28)
function request()
  counter = counter + 1
  local n = (RUN * 4 + id) * 10000000 + counter
  local text = string.format("%s Stop i-%017x in vpc-%08x, subnet-%017x, sg-%017x, ip 10.%d.%d.%d",
    FILLER, n, n, n, n, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("POST", PATH, headers, '{"model":"claude-sonnet-4-5","max_tokens":64,'
    .. '"messages":[{"role":"user","content":"' .. text .. '"}]}')
end
""" + WRK_DONE


def wrk(tmp, url, connections, seconds, script, variables):
    path = Path(tmp) / f"wrk-{time.monotonic_ns()}.lua"
    path.write_text("".join(f"local {k} = {json.dumps(v)}\n" for k, v in variables.items())
                    + script)
    threads = 1 if connections == 1 else 2
    run = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                          "--timeout", "30s", "-s", str(path), url],
                         capture_output=True, text=True, timeout=seconds * 3 + 60, check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed: {run.stdout[-2000:]}{run.stderr[-2000:]}")
    result = json.loads(lines[-1][len("WRK_JSON "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("non_2xx", "connect", "read", "write",
                                               "timeout"))
    return result


def rps_points(tmp, gw, bodies, seconds):
    points = []
    for name, body_file in bodies:
        for connections in CONCURRENCY:
            point = {"body": name, "connections": connections}
            for label, path in (("plain", "/plain/v1/messages"), ("gateway", "/v1/messages")):
                offset = Path(gw["log"]).stat().st_size
                point[label] = wrk(tmp, gw["url"] + path, connections, seconds, WRK_FIXED,
                                   {"BODY_FILE": str(body_file), "API_KEY": _harness.API_KEY})
            point["gateway_phases_ms"] = _harness.log_figures(gw["log"], offset)
            point["ratio"] = point["gateway"]["rps"] / point["plain"]["rps"]
            points.append(point)
    return points


def worker_rss(gw):
    return {pid: _harness.rss_kib(pid) for pid in _harness.worker_pids(gw["nginx"].pid)}


def soak(tmp, gw, requests, connections=16):
    """wrk runs for a fixed time, not a fixed count: the soak runs in steps sized from the
    warm-up's rate, until `requests` have been answered (a tenth of them per step, about)."""
    runs = iter(range(1000))

    def run(seconds):
        return wrk(tmp, gw["url"] + "/v1/messages", connections, seconds, WRK_SOAK,
                   {"PATH": "/v1/messages", "API_KEY": _harness.API_KEY, "RUN": next(runs)})

    warm = run(2)  # warm-up: heaps and pools reach their working size
    step_seconds = max(1, round(requests / 10 / warm["rps"]))
    store = redis.Redis(host="127.0.0.1", port=gw["redis_port"], password=_harness.REDIS_PASSWORD)
    redis_before = store.info("memory")["used_memory"]
    samples = [{"after_requests": 0, "rss_kib": worker_rss(gw)}]
    done, errors, started = 0, 0, time.monotonic()
    while done < requests:
        result = run(step_seconds)
        done += result["requests"]
        errors += result["errors"]
        samples.append({"after_requests": done, "rss_kib": worker_rss(gw)})
    elapsed = time.monotonic() - started
    half = next(s for s in samples if s["after_requests"] >= done / 2)
    before, middle, after = samples[0]["rss_kib"], half["rss_kib"], samples[-1]["rss_kib"]
    return {
        "requests": done, "errors": errors, "seconds": round(elapsed, 1),
        "rps": round(done / elapsed, 1), "connections": connections, "samples": samples,
        "half_at_requests": half["after_requests"],
        "workers": [{"pid": pid, "rss_kib_before": before[pid], "rss_kib_middle": middle.get(pid),
                     "rss_kib_after": after.get(pid),
                     "growth_kib": after.get(pid, 0) - before[pid],
                     "growth_kib_second_half": after.get(pid, 0) - middle.get(pid, 0)}
                    for pid in before],
        "redis_used_memory_growth_bytes": store.info("memory")["used_memory"] - redis_before,
        "mappings_in_redis": store.dbsize(),
    }


def main():
    parser = _harness.arguments(__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument("--requests", type=int,
                        help="soak length (default 100000, 2000 with --quick)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (Debian: apt-get install wrk)")
    seconds = 1 if args.quick else 10
    soak_requests = args.requests or (2000 if args.quick else 100_000)

    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp, \
            _harness.bench_stack(tmp) as gw:
        bodies = []
        for name, size, ids in (("2KB/5 ids", 2 * 1024, 5), ("50KB/100 ids", 50 * 1024, 100)):
            path = Path(tmp) / f"body-{size}.json"
            path.write_bytes(_harness.conversation(size, ids))
            bodies.append((name, path))
        if args.quick:
            bodies = bodies[:1]
        points = rps_points(tmp, gw, bodies, seconds)
        offset = Path(gw["log"]).stat().st_size
        memory = soak(tmp, gw, soak_requests)
        memory["gateway_phases_ms"] = _harness.log_figures(gw["log"], offset)
        alive = gw["nginx"].poll() is None and _harness.worker_pids(gw["nginx"].pid) != []

    rows = [[p["body"], p["connections"], f"{p['plain']['rps']:.0f}", f"{p['gateway']['rps']:.0f}",
             f"{p['ratio']:.2f}", f"{p['plain']['p50_us'] / 1000:.2f}",
             f"{p['gateway']['p50_us'] / 1000:.2f}",
             p["plain"]["errors"] + p["gateway"]["errors"]] for p in points]
    _harness.print_table(
        f"Requests per second, {seconds} s per point (wrk; gateway vs the same nginx without "
        "the plugin)" + (" [--quick: rough]" if args.quick else ""),
        ["body", "connections", "plain req/s", "gateway req/s", "gateway / plain",
         "plain p50 ms", "gateway p50 ms", "errors"], rows)
    _harness.print_table(
        f"Worker memory (RSS) over a soak of {memory['requests']} requests, 5 new identifiers "
        f"each, {memory['connections']} connections: {memory['rps']} req/s, "
        f"{memory['errors']} errors",
        ["worker", "RSS before KiB", "RSS at half KiB", "RSS after KiB", "growth KiB",
         "growth in 2nd half KiB"],
        [[w["pid"], w["rss_kib_before"], w["rss_kib_middle"], w["rss_kib_after"],
          f"{w['growth_kib']:+d}", f"{w['growth_kib_second_half']:+d}"]
         for w in memory["workers"]])
    ratio_met = all(p["ratio"] >= TARGET_RATIO for p in points)
    print(f"\ntarget gateway >= {TARGET_RATIO:.0%} of plain req/s: "
          + ("met" if ratio_met else "NOT met") + " (lowest "
          + f"{min(p['ratio'] for p in points):.2f})")
    print(f"Redis memory growth over the soak: {memory['redis_used_memory_growth_bytes']} bytes "
          f"({memory['mappings_in_redis']} keys: mappings live for mapping_ttl_seconds)")
    path = _harness.write_results(args.results, "throughput", {
        "quick": args.quick, "seconds_per_point": seconds, "points": points, "soak": memory,
        "nginx_alive_at_end": bool(alive),
        "targets": {"gateway_over_plain_rps": {"limit": TARGET_RATIO, "met": ratio_met}}})
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
