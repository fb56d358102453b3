"""Masking engine throughput (MB/s): the Lua engine inside nginx vs the Python twin.

Both engines run the same work on the same bytes in one run:
  scan   the catalog scan plus repeated originals (what the gateway finds in a body);
  mask   scan, one token per distinct original from an in-memory table, and the text rebuilt
         (the Python twin's mask_text; the same steps written in Lua below);
  json   Lua only: the gateway's request path without Redis (json_body.scan, then rewrite with
         made-up tokens), on the conversation, which is a Messages API body; and the JSON
         validation it starts with alone (json_body.decode, lua-cjson), to show its share.
Inputs: every data file of the corpus (real/ and negative/, not the .expect.json files) as one
pass, and a synthetic conversation of about 1 MB (many turns, 300 distinct identifiers; 128 KB
and 40 with --quick).

The Lua side runs in nginx's init phase (master_process off), timed with ngx.now() after
ngx.update_time(); the Python side with time.perf_counter(). Each measure repeats its work
until it has run for at least --seconds (warm-up run first, not counted).

    .venv/bin/python bench/engine_throughput.py [--quick]
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _harness

sys.path.insert(0, str(_harness.REPO / "plugins" / "module_utils"))
import aws_masker_engine

LUA = r"""
local cjson = require "cjson"
local catalog_mod = require "aws_masker.catalog"
local repeats = require "aws_masker.repeats"
local json_body = require "aws_masker.json_body"
local sub, concat, format = string.sub, table.concat, string.format

local f = assert(io.open(PLAN, "rb"))
local plan = cjson.decode(f:read("*a"))
f:close()
local catalog = assert(catalog_mod.load(plan.catalog))

local function read(path)
  local h = assert(io.open(path, "rb"))
  local data = h:read("*a")
  h:close()
  return data
end

local function scan(text)
  local matches, err = catalog:scan(text)
  assert(matches or not err, err)
  if matches then
    matches = repeats.extend(repeats.new(matches), text, matches)
  end
  return matches
end

local function mask(text)
  local matches = scan(text)
  if not matches then
    return text
  end
  local tokens, seq, parts, n, cursor = {}, {}, {}, 0, 1
  for i = 1, #matches do
    local m = matches[i]
    local key = m.code .. "\0" .. m.value
    local token = tokens[key]
    if not token then
      seq[m.code] = (seq[m.code] or 0) + 1
      token = format("AWS_%s_%06d", m.code, seq[m.code])
      tokens[key] = token
    end
    parts[n + 1], parts[n + 2] = sub(text, cursor, m.start - 1), token
    n = n + 2
    cursor = m.stop + 1
  end
  parts[n + 1] = sub(text, cursor)
  return concat(parts)
end

local function json_path(text)
  local p = assert(json_body.scan(text, catalog))
  local tokens = {}
  for i = 1, #p.findings do
    tokens[i] = format("AWS_%s_%06d", p.findings[i].code, i)
  end
  return json_body.rewrite(p, tokens)
end

local function timed(fn, texts)
  for i = 1, #texts do fn(texts[i]) end -- warm-up, not counted
  ngx.update_time()
  local started, runs, elapsed = ngx.now(), 0, 0
  repeat
    for i = 1, #texts do fn(texts[i]) end
    runs = runs + 1
    ngx.update_time()
    elapsed = ngx.now() - started
  until elapsed >= plan.seconds
  return { runs = runs, seconds = elapsed }
end

local results = {}
for _, input in ipairs(plan.inputs) do
  local texts = {}
  for i, path in ipairs(input.paths) do texts[i] = read(path) end
  local r = { name = input.name, scan = timed(scan, texts), mask = timed(mask, texts) }
  if input.json then
    r.json = timed(json_path, texts)
    r.json_decode = timed(json_body.decode, texts)
  end
  local found = 0
  for i = 1, #texts do found = found + #(scan(texts[i]) or {}) end
  r.found = found
  results[#results + 1] = r
end
local out = assert(io.open(plan.output, "wb"))
out:write(cjson.encode(results))
out:close()
os.exit(0, true)
"""


def corpus_files():
    root = Path(os.environ.get("AWS_MASKING_CORPUS", _harness.REPO.parent / "shared" / "corpus"))
    files = sorted(p for part in ("real", "negative") for p in (root / part).iterdir()
                   if p.is_file() and not p.name.endswith(".expect.json"))
    if not files:
        raise SystemExit(f"no corpus files under {root}; set AWS_MASKING_CORPUS")
    return files


def lua_runs(tmp, inputs, seconds):
    plan = tmp / "plan.json"
    output = tmp / "lua_results.json"
    plan.write_text(json.dumps({"catalog": str(_harness.catalog_json(tmp)), "seconds": seconds,
                                "output": str(output), "inputs": inputs}))
    script = tmp / "bench.lua"
    script.write_text(f"local PLAN = {json.dumps(str(plan))}\n" + LUA)
    run = _harness.run_lua_in_init(tmp, script, timeout=900)
    if run.returncode != 0 or not output.exists():
        raise SystemExit("the Lua benchmark failed:\n" + run.stderr[-3000:])
    return {r["name"]: r for r in json.loads(output.read_text())}


def python_timed(fn, texts, seconds):
    for text in texts:
        fn(text)
    started = time.perf_counter()
    runs = 0
    while True:
        for text in texts:
            fn(text)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return {"runs": runs, "seconds": elapsed}


def mb_per_s(measure, size):
    return measure["runs"] * size / measure["seconds"] / 1e6


def main():
    args = _harness.arguments(__doc__.split('\n', maxsplit=1)[0]).parse_args()
    seconds = 0.05 if args.quick else 2.0
    engine = aws_masker_engine.default_engine()

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        tmp = Path(tmp)
        conversation = tmp / "conversation.json"
        # --quick: a smaller conversation, the Python twin needs about 2 s per MB
        size, distinct = (128 << 10, 40) if args.quick else (1 << 20, 300)
        conversation.write_bytes(_harness.conversation(size, distinct))
        inputs = [{"name": "corpus", "paths": [str(p) for p in corpus_files()]},
                  {"name": f"conversation_{size >> 10}kb", "paths": [str(conversation)],
                   "json": True}]
        lua = lua_runs(tmp, inputs, seconds)

        results, rows = [], []
        for spec in inputs:
            raw = [Path(p).read_bytes() for p in spec["paths"]]
            texts = [r.decode("utf-8") for r in raw]
            size = sum(len(r) for r in raw)
            found = sum(len(engine.scan(t)) for t in texts)
            py = {"scan": python_timed(engine.scan, texts, seconds),
                  "mask": python_timed(engine.mask_text, texts, seconds)}
            entry = {"input": spec["name"], "files": len(raw), "bytes": size,
                     "found_lua": lua[spec["name"]]["found"], "found_python": found,
                     "lua": lua[spec["name"]], "python": py}
            for work in ("scan", "mask"):
                lua_rate = mb_per_s(lua[spec["name"]][work], size)
                py_rate = mb_per_s(py[work], size)
                entry[f"{work}_mb_s"] = {"lua": round(lua_rate, 2), "python": round(py_rate, 2),
                                         "lua_over_python": round(lua_rate / py_rate, 2)}
                rows.append([spec["name"], f"{size / 1e6:.2f}", entry["found_lua"], found, work,
                             f"{lua_rate:.1f}", f"{py_rate:.1f}", f"{lua_rate / py_rate:.2f}x"])
            if "json" in lua[spec["name"]]:
                rate = mb_per_s(lua[spec["name"]]["json"], size)
                entry["json_mb_s"] = {"lua": round(rate, 2)}
                decode = mb_per_s(lua[spec["name"]]["json_decode"], size)
                entry["json_decode_mb_s"] = {"lua": round(decode, 2)}
                rows.append([spec["name"], f"{size / 1e6:.2f}", entry["found_lua"], "-",
                             "json (gateway path, no store)", f"{rate:.1f}", "-", "-"])
                rows.append([spec["name"], f"{size / 1e6:.2f}", "-", "-",
                             "json decode only (cjson, part of json)", f"{decode:.1f}", "-", "-"])
            results.append(entry)

    _harness.print_table(
        f"Engine throughput, MB/s (higher is better){' [--quick: rough]' if args.quick else ''}",
        ["input", "MB", "found (Lua)", "found (Python)", "work", "Lua in nginx", "Python twin",
         "Lua / Python"], rows)
    for entry in results:
        if entry["found_lua"] != entry["found_python"]:
            print(f"WARNING: {entry['input']}: Lua found {entry['found_lua']} identifiers, "
                  f"Python {entry['found_python']}")
    path = _harness.write_results(args.results, "engine_throughput", {
        "quick": args.quick, "min_seconds_per_measure": seconds, "results": results})
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
