"""Latency the gateway adds, and the Redis round trips it makes per request.

One private nginx (2 workers) serves two locations to the same upstream: /v1/ with the gateway's
Lua phases (mask the request, restore the answer) and /plain/v1/ with the same proxying and no
Lua. The upstream is a second nginx returning a canned Messages API answer, as JSON or, when
asked with X-Bench-Stream: 1, as an event stream. Redis is private too.

For each body (2 KB with 5 identifiers, 50 KB with 100, 1 MB with 300) one client sends the
requests one after the other on a kept-alive connection, alternating the gateway and the plain
path, and times each exchange to the last byte of the answer. "new" bodies name identifiers the
gateway has not seen (each request its own), "seen" sends one body again and again (a
conversation's history). Added latency = gateway percentile - plain percentile.

Redis round trips: a separate phase per case sends requests through the gateway while MONITOR
watches the private Redis; every command from a client other than a script is one round trip
(lua-resty-redis does not pipeline). New connections to Redis are counted from INFO stats.
The gateway's own log line gives scan_ms, store_ms and mask_ms per request (averaged here).

    .venv/bin/python bench/latency.py [--quick]
"""

import collections
import http.client
import statistics
import tempfile
import threading
import time
from pathlib import Path

import _harness
import redis

TARGET_ADDED_P50_MS = 2.0
TARGET_ROUND_TRIPS = 2

CASES = [  # name, size, identifiers, fresh identifiers in every request
    ("2KB/5 ids new", 2 * 1024, 5, True),
    ("50KB/100 ids new", 50 * 1024, 100, True),
    ("50KB/100 ids seen", 50 * 1024, 100, False),
    ("1MB/300 ids new", 1024 * 1024, 300, True),
]


def headers(stream):
    h = {"Content-Type": "application/json", "x-api-key": _harness.API_KEY,
         "anthropic-version": "2023-06-01"}
    if stream:
        h["X-Bench-Stream"] = "1"
    return h


class Client:
    """One kept-alive HTTP/1.1 connection; send() returns the seconds to the last byte."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, path, body, stream):
        started = time.perf_counter()
        self.conn.request("POST", path, body=body, headers=headers(stream))
        response = self.conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {data[:300]!r}")
        return elapsed

    def close(self):
        self.conn.close()


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bodies(size, identifiers, fresh, count, first):
    if not fresh:
        return [_harness.conversation(size, identifiers, first=first)] * count
    return [_harness.conversation(size, identifiers, first=first + i * identifiers)
            for i in range(count)]


class RedisWatch:
    """Counts the commands clients (not scripts) send to Redis while it runs."""

    MARK = "bench-latency-end"

    def __init__(self, port):
        # one connection for INFO and the end mark, left out of the count by its port
        self.client = redis.Redis(host="127.0.0.1", port=port, password=_harness.REDIS_PASSWORD,
                                  single_connection_client=True)
        self.own_port = self.client.client_info()["addr"].rsplit(":", 1)[1]
        self.commands = collections.Counter()
        self.script_commands = collections.Counter()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self):
        with self.client.monitor() as monitor:
            self.ready.set()
            for entry in monitor.listen():
                name = entry["command"].split(" ", 1)[0].upper()
                if name == "ECHO" and self.MARK in entry["command"]:
                    return
                if entry["client_type"] == "lua":
                    self.script_commands[name] += 1
                elif entry["client_port"] != self.own_port:
                    self.commands[name] += 1

    def connections(self):
        return self.client.info("stats")["total_connections_received"]

    def __enter__(self):
        self.connections_before = self.connections()
        self.thread.start()
        self.ready.wait(5)
        time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        time.sleep(0.1)  # the log phase and keepalive of the last request
        self.connections_after = self.connections()
        self.client.echo(self.MARK)
        self.thread.join(10)


def run_case(gw, case, stream, count, counted, first, warm_up=3):
    name, size, identifiers, fresh = case
    work = bodies(size, identifiers, fresh, count, first)
    client = Client(gw["port"])
    try:
        for body in work[:warm_up]:  # warm-up: connections to nginx, Redis and the upstream
            client.send("/v1/messages", body, stream)
            client.send("/plain/v1/messages", body, stream)
        log_offset = Path(gw["log"]).stat().st_size
        gateway, plain = [], []
        for i, body in enumerate(work):
            # alternate which path goes first, so neither always follows the other
            order = (("/v1/messages", gateway), ("/plain/v1/messages", plain))
            for path, times in (order if i % 2 == 0 else order[::-1]):
                times.append(client.send(path, body, stream))
        time.sleep(0.2)
        phases = _harness.log_figures(gw["log"], log_offset)

        extra = bodies(size, identifiers, fresh, counted, first + count * identifiers)
        with RedisWatch(gw["redis_port"]) as watch:
            for body in extra:
                client.send("/v1/messages", body, stream)
    finally:
        client.close()

    ms = {k: [t * 1000 for t in v] for k, v in (("gateway", gateway), ("plain", plain))}
    figures = {path: {"p50": percentile(v, 50), "p99": percentile(v, 99),
                      "mean": statistics.fmean(v)} for path, v in ms.items()}
    round_trips = sum(watch.commands.values()) / counted
    return {
        "case": name, "answer": "sse" if stream else "json", "body_bytes": len(work[0]),
        "identifiers": identifiers, "fresh_identifiers": fresh, "requests": count,
        "ms": {path: {k: round(v, 3) for k, v in f.items()} for path, f in figures.items()},
        "added_p50_ms": round(figures["gateway"]["p50"] - figures["plain"]["p50"], 3),
        "added_p99_ms": round(figures["gateway"]["p99"] - figures["plain"]["p99"], 3),
        "gateway_phases_ms": phases,
        "redis": {"requests_watched": counted, "round_trips_per_request": round_trips,
                  "commands": dict(watch.commands),
                  "script_commands_per_request": round(
                      sum(watch.script_commands.values()) / counted, 1),
                  # less the one MONITOR opened
                  "new_connections": watch.connections_after - watch.connections_before - 1},
    }


def main():
    args = _harness.arguments(__doc__.split('\n', maxsplit=1)[0]).parse_args()
    count = 5 if args.quick else None
    counted = 2 if args.quick else 20
    # --quick: the two smaller bodies only, a few requests each (a smoke run, not a measure)
    cases = CASES[:2] if args.quick else CASES
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp, \
            _harness.bench_stack(tmp) as gw:
        first = 1
        for case in cases:
            n = count or (100 if case[1] > 100 * 1024 else 400)
            for stream in (False, True):
                results.append(run_case(gw, case, stream, n, counted, first,
                                        warm_up=1 if args.quick else 3))
                first += (n + counted) * case[2]

    rows = []
    for r in results:
        rows.append([r["case"], r["answer"], r["requests"],
                     f"{r['ms']['plain']['p50']:.2f}", f"{r['ms']['gateway']['p50']:.2f}",
                     f"{r['added_p50_ms']:+.2f}",
                     f"{r['ms']['gateway']['p50'] / r['ms']['plain']['p50']:.2f}x",
                     f"{r['ms']['plain']['p99']:.2f}", f"{r['ms']['gateway']['p99']:.2f}",
                     f"{r['added_p99_ms']:+.2f}",
                     f"{r['redis']['round_trips_per_request']:g}",
                     "/".join(f"{r['gateway_phases_ms'].get(k, 0):.2f}"
                              for k in ("scan_ms", "store_ms", "mask_ms"))])
    _harness.print_table(
        "Latency, ms (one client, kept-alive; gateway vs the same nginx without the plugin)"
        + (" [--quick: rough]" if args.quick else ""),
        ["body", "answer", "n", "plain p50", "gateway p50", "added p50", "ratio p50",
         "plain p99", "gateway p99", "added p99", "Redis round trips/req",
         "gateway scan/store/mask ms"], rows)

    target = [r for r in results if r["case"].startswith("50KB")]
    latency_met = all(r["added_p50_ms"] <= TARGET_ADDED_P50_MS for r in target)
    trips_met = all(r["redis"]["round_trips_per_request"] <= TARGET_ROUND_TRIPS for r in results)
    print(f"\ntarget added p50 <= {TARGET_ADDED_P50_MS} ms at 50 KB / 100 identifiers: "
          + ("met" if latency_met else "NOT met") + " ("
          + ", ".join(f"{r['case']} {r['answer']} {r['added_p50_ms']:+.2f} ms" for r in target)
          + ")")
    print(f"target <= {TARGET_ROUND_TRIPS} Redis round trips per request: "
          + ("met" if trips_met else "NOT met") + " (commands seen: "
          + "; ".join(sorted({f"{k} x{v}" for r in results
                              for k, v in r["redis"]["commands"].items()})) + ")")
    path = _harness.write_results(args.results, "latency", {
        "quick": args.quick, "results": results,
        "targets": {"added_p50_ms_50kb_100_ids": {"limit": TARGET_ADDED_P50_MS,
                                                  "met": latency_met},
                    "redis_round_trips_per_request": {"limit": TARGET_ROUND_TRIPS,
                                                      "met": trips_met}}})
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
