# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The masking canary: known identifiers sent through the edge, checked on both sides.

The gateway answers a request that carries its canary secret in ``x-aws-masker-canary``
itself (lua/aws_masker/canary.lua): it masks the body as for any client, never proxies it, and
answers with the masked user text, which its normal response path restores; the body that
would have gone upstream comes back base64 in ``x-aws-masker-canary-upstream-body``. So the
canary proves masking and restoring on the live chain without spending API tokens.

The originals below are made up: shaped like AWS identifiers, belonging to nobody. Evidence
still never shows them, only counts and token codes.
"""

import base64
import contextlib
import json
import re
from urllib.error import HTTPError  # what open_url raises for an HTTP error status

from ansible.module_utils.urls import open_url
from ansible_collections.aws_masking.gateway.plugins.module_utils._checks import make_check

HEADER = "x-aws-masker-canary"
BODY_HEADER = "x-aws-masker-canary-upstream-body"
TOKEN_RE = re.compile(r"AWS_[A-Z][A-Z0-9_]*_[0-9]{6}")

ORIGINALS = (
    "i-0c4a7e1f9b2d38a65",
    "vpc-07e1b2c3d4a5f6981",
    "subnet-0f1e2d3c4b5a69788",
    "sg-0a9b8c7d6e5f43210",
    "arn:aws:iam::210987654321:role/aws-masker-canary",
    "AKIAZCANARY7EXAMPLE1",
    "10.231.47.9",
)
TEXT = (
    "Canary of the masking gateway: instance {0} in {1}, subnet {2}, security group {3}; "
    "it assumes {4} with key {5} and answers on {6}. Repeat: {0}."
).format(*ORIGINALS)


def _request(url, secret, stream, timeout, validate_certs):
    body = {"model": "aws-masker-canary", "max_tokens": 16,
            "messages": [{"role": "user", "content": TEXT}]}
    if stream:
        body["stream"] = True
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01",
               "x-api-key": "aws-masker-canary", HEADER: secret}
    try:
        response = open_url(url.rstrip("/") + "/v1/messages", data=json.dumps(body),
                            headers=headers, method="POST", timeout=timeout,
                            validate_certs=validate_certs, follow_redirects="none")
        return response.getcode(), response.headers, response.read(), None
    except HTTPError as exc:
        return exc.code, exc.headers, exc.read(), None
    except OSError as exc:  # URLError and socket errors alike
        reason = getattr(exc, "reason", exc)
        return None, None, b"", f"{type(reason).__name__}: {reason}"[:200]


def answer_text(raw, stream):
    """The text of a Messages answer, JSON or the text deltas of an SSE stream."""
    text = raw.decode("utf-8")
    if not stream:
        return "".join(block.get("text", "") for block in json.loads(text).get("content", [])
                       if block.get("type") == "text")
    parts = []
    for line in text.splitlines():
        if line.startswith("data:"):
            event = json.loads(line[5:].strip())
            if event.get("type") == "content_block_delta":
                parts.append(event.get("delta", {}).get("text", ""))
    return "".join(parts)


def _refused(name, status, error, body):
    """The check for an answer other than 200, with the section its status points at."""
    kind = ""
    with contextlib.suppress(ValueError, AttributeError):
        kind = json.loads(body).get("error", {}).get("type", "")
    if status is None:
        return make_check(name, "fail", f"the edge did not answer: {error}", "nginx_proxy",
                          "Start the edge and check edge_health.")
    evidence = f"HTTP {status}" + (f" {kind}" if kind else "")
    if status == 502:
        return make_check(name, "fail", evidence + ": the gateway behind the edge did not answer",
                          "nginx_proxy", "Start the gateway and check gateway_status.")
    if status == 503:
        return make_check(name, "fail", evidence + ": the gateway's mapping store is down",
                          "redis_connection", "Check redis_ping and gateway_redis.")
    if status == 403:
        return make_check(name, "fail", evidence + ": the gateway refused the canary secret",
                          "startup_config",
                          "Redeploy the gateway role (it renders the canary secret into "
                          "masker.json), or reload the gateway.")
    return make_check(name, "fail", evidence, "plugin",
                      "Read the gateway's error log (playbooks/diagnostics.yml).")


def run(url, secret, stream=False, timeout=10.0, validate_certs=True):
    """Sends the canary once and returns its check (canary_json or canary_sse)."""
    name = "canary_sse" if stream else "canary_json"
    status, headers, raw, error = _request(url, secret, stream, timeout, validate_certs)
    if status != 200:
        return _refused(name, status, error, raw)

    encoded = headers.get(BODY_HEADER) if headers is not None else None
    if not encoded:
        return make_check(name, "fail", f"no {BODY_HEADER} header: the canary was not answered "
                          "by the gateway (an old plugin, or a proxy dropped it)", "plugin",
                          "Redeploy the gateway role and restart the gateway.")
    upstream_body = base64.b64decode(encoded).decode("utf-8", "replace")
    leaked = sum(1 for original in ORIGINALS if original in upstream_body)
    tokens = sorted(set(TOKEN_RE.findall(upstream_body)))
    codes = sorted({token[4:-7] for token in tokens})
    try:
        restored = answer_text(raw, stream)
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        restored, error = None, type(exc).__name__

    masked = f"{len(ORIGINALS)} identifiers -> {len(tokens)} tokens ({', '.join(codes)})"
    problems = []
    if leaked:
        problems.append(f"{leaked} of {len(ORIGINALS)} originals in the upstream-bound body")
    if len(tokens) < len(ORIGINALS):
        problems.append(f"only {len(tokens)} tokens for {len(ORIGINALS)} identifiers")
    if restored is None:
        problems.append(f"the answer could not be read ({error})")
    elif restored != TEXT:
        differs = next((i for i, (a, b) in enumerate(zip(restored, TEXT)) if a != b),
                       min(len(restored), len(TEXT)))
        problems.append(f"the answer is not the original text (differs from character "
                        f"{differs}; {len(TOKEN_RE.findall(restored))} tokens left in it)")
    if problems:
        return make_check(name, "fail", f"{masked}; " + "; ".join(problems), "plugin",
                          "Do not send traffic: masking or restoring is broken. Check "
                          "plugin_files and the gateway's error log, then redeploy.")
    return make_check(name, "pass", f"{masked}, 0 originals in the upstream-bound body; the "
                      "answer restored exactly", "plugin")
