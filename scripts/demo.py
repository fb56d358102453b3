#!/usr/bin/env python3
"""Send a text full of AWS identifiers through the deployed gateway and show both sides.

Uses the official ``anthropic`` SDK against the edge (as Claude Code or an application would),
then reads what the local stand-in upstream received, directly from the stand-in, and reports
whether any identifier reached it and whether the client got its original text back, for a plain
and a streamed request. Exits 1 when either check fails.
"""

import argparse
import json
import sys
import urllib.request
from pathlib import Path

import anthropic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))

import aws_masker_engine

DEFAULT_TEXT = REPO.parent / "shared" / "corpus" / "real" / "ec2_describe_instances.txt"


def received_bodies(stub_url, limit):
    with urllib.request.urlopen(f"{stub_url}/__stub/received?limit={limit}", timeout=10) as resp:
        return [json.loads(entry["body"]) for entry in json.load(resp)]


def clear_received(stub_url):
    request = urllib.request.Request(f"{stub_url}/__stub/received", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()


def upstream_text(body):
    """The user text of the last message, as the upstream saw it."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def excerpt(text, lines=12):
    picked = [line for line in text.splitlines() if "AWS_" in line][:lines]
    return "\n".join(f"    {line.strip()[:96]}" for line in picked)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_TEXT,
                        help="text to send (default: the corpus' describe-instances output)")
    parser.add_argument("--edge", default="http://127.0.0.1:8085", help="edge URL")
    parser.add_argument("--stub", default="http://127.0.0.1:8099",
                        help="stand-in upstream URL, read directly")
    parser.add_argument("--api-key", default="sk-ant-local-demo-key",
                        help="client credential (the stand-in accepts any)")
    args = parser.parse_args()

    text = args.file.read_text(encoding="utf-8")
    engine = aws_masker_engine.MaskingEngine()
    identifiers = sorted({match.value for match in engine.scan(text)})
    client = anthropic.Anthropic(base_url=args.edge, api_key=args.api_key, max_retries=0)
    print(f"Sending {args.file.name} ({len(text)} characters, {len(identifiers)} distinct "
          f"AWS identifiers) through {args.edge}")

    failures = 0
    for mode in ("plain", "streamed"):
        clear_received(args.stub)
        request = {"model": "claude-sonnet-4-5", "max_tokens": 4096,
                   "messages": [{"role": "user", "content": text}]}
        if mode == "plain":
            reply = client.messages.create(**request).content[0].text
        else:
            with client.messages.stream(**request) as stream:
                reply = "".join(stream.text_stream)
        seen = upstream_text(received_bodies(args.stub, 1)[-1])
        leaked = [value for value in identifiers if value in seen]
        restored = reply == text
        print(f"\n[{mode}] what the upstream received (lines with tokens):")
        print(excerpt(seen))
        print(f"[{mode}] identifiers that reached the upstream: "
              f"{len(leaked)} of {len(identifiers)}")
        print(f"[{mode}] client got the original text back: {'yes' if restored else 'NO'}")
        failures += bool(leaked) + (not restored)

    print("\nresult:", "OK" if failures == 0 else f"FAILED ({failures} check(s))")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
