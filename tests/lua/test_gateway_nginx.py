"""The nginx_lua engine end to end: real nginx with the adapter, private Redis, local upstream.

Each test gets its own redis-server on a free loopback port, a Messages-API-shaped upstream in a
thread (it records what reached it and echoes the user's text back, as JSON or as an SSE stream
cut into small writes), and an nginx running lua/aws_masker/nginx.lua in front of it.
"""

import concurrent.futures
import contextlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from bench import _harness
from bench._harness import API_KEY, REDIS_PASSWORD, stop, wait_port  # noqa: F401 (re-exported)

MAX_BODY = 64 * 1024

IDENTIFIERS = ["i-0a1b2c3d4e5f67890", "arn:aws:iam::123456789012:role/Admin", "10.0.1.5",
               "vpc-a01106c2", "AKIAIOSFODNN7EXAMPLE"]
TOKEN_SHAPE = "AWS_"

pytestmark = pytest.mark.skipif(not _harness.available(),
                                reason="needs nginx with the Lua module and redis-server")


def sse_event(name, data):
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class Upstream(BaseHTTPRequestHandler):
    """A stand-in Messages API: echoes the last user text; SSE when the body asks to stream."""

    protocol_version = "HTTP/1.1"
    received = None  # set per server: list of (path, headers, body bytes)

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, dict(self.headers), body))
        request = json.loads(body)
        text = request["messages"][-1]["content"]
        if isinstance(text, list):
            text = text[0]["text"]
        if request.get("stream"):
            self.stream(text)
        else:
            self.message(text)

    def message(self, text):
        answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                  "content": [{"type": "thinking", "thinking": text, "signature": "sig"},
                              {"type": "text", "text": "You said: " + text},
                              {"type": "tool_use", "id": "toolu_1", "name": "echo",
                               "input": {"text": text, text[:40]: 1}}],
                  "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, text):
        events = [sse_event("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": []}}),
            sse_event("content_block_start", {"type": "content_block_start", "index": 0,
                                              "content_block": {"type": "text", "text": ""}})]
        reply = "You said: " + text
        for i in range(0, len(reply), 5):
            events.append(sse_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": reply[i:i + 5]}}))
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(sse_event("content_block_start", {
            "type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "echo", "input": {}}}))
        partial = json.dumps({"text": text})
        for i in range(0, len(partial), 7):
            events.append(sse_event("content_block_delta", {
                "type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": partial[i:i + 7]}}))
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 1}))
        events.append(sse_event("message_stop", {"type": "message_stop"}))
        data = "".join(events).encode()

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(0, len(data), 13):  # small writes: events and tokens split across chunks
            self.wfile.write(data[i:i + 13])
            self.wfile.flush()
        self.close_connection = True


def start_upstream():
    """The upstream of one gateway, serving in a thread; `received` lists what reached it.
    Modules that need another upstream replace this function (or Upstream)."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.received = []
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    return upstream


@contextlib.contextmanager
def running_gateway(tmp_path, body_buffer=MAX_BODY, **overrides):
    """The private gateway (see bench/_harness.py) in front of an Upstream in a thread."""
    upstream = start_upstream()
    try:
        with _harness.running_gateway(tmp_path, upstream.server_port, max_body=MAX_BODY,
                                      body_buffer=body_buffer, **overrides) as gw:
            yield {**gw, "received": upstream.received, "upstream": upstream}
    finally:
        upstream.shutdown()
        upstream.server_close()


@pytest.fixture
def gateway(tmp_path):
    with running_gateway(tmp_path) as gw:
        yield gw


def log_lines(gw, needle, timeout=5.0):
    """The gateway's log lines holding needle; waits for them (the log phase runs after the
    response has reached the client)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in gw["log"].read_text().splitlines() if needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def post(gw, body, path="/v1/messages", headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(gw["url"] + path, data=data, method="POST", headers={
        "Content-Type": "application/json", "x-api-key": API_KEY,
        "anthropic-version": "2023-06-01", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def message(text, stream=False):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024,
            "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return body


USER_TEXT = ("Stop " + IDENTIFIERS[0] + " (role " + IDENTIFIERS[1] + ") at " + IDENTIFIERS[2]
             + " in " + IDENTIFIERS[3] + ", key " + IDENTIFIERS[4] + " — café 😀 done")


def forwarded_text(gw, index=-1):
    _, _, body = gw["received"][index]
    return json.loads(body)["messages"][-1]["content"]


def test_masked_body_reaches_upstream_and_json_response_is_restored(gateway):
    status, headers, body = post(gateway, message(USER_TEXT))
    assert status == 200, body

    _, sent_headers, raw = gateway["received"][0]
    for identifier in IDENTIFIERS:
        assert identifier.encode() not in raw
    masked = forwarded_text(gateway)
    assert "AWS_EC2_000001" in masked and "café 😀 done" in masked
    assert sent_headers.get("Accept-Encoding") in (None, "")
    assert json.loads(raw)["model"] == "claude-sonnet-4-5"

    answer = json.loads(body)
    assert answer["content"][1]["text"] == "You said: " + USER_TEXT
    assert answer["content"][2]["input"]["text"] == USER_TEXT
    keys = [key for key in answer["content"][2]["input"] if key != "text"]
    assert keys[0].startswith("Stop " + IDENTIFIERS[0]) and "AWS_" not in keys[0]  # a key
    assert answer["content"][0]["thinking"] == masked  # thinking blocks are never altered
    # the upstream's Content-Length no longer holds: dropped, the body goes chunked
    assert headers.get("Content-Length") in (None, str(len(body)))


def test_same_original_gets_the_same_token_across_requests(gateway):
    post(gateway, message("first " + IDENTIFIERS[0]))
    post(gateway, message("again " + IDENTIFIERS[0] + " and " + IDENTIFIERS[3]))
    first, second = forwarded_text(gateway, 0), forwarded_text(gateway, 1)
    assert first == "first AWS_EC2_000001"
    assert second == "again AWS_EC2_000001 and AWS_VPC_000001"

    # Another credential is another scope: its own numbering, no access to the first one's.
    status, _, _ = post(gateway, message("other " + IDENTIFIERS[3]),
                        headers={"x-api-key": "sk-ant-someone-else"})
    assert status == 200
    assert forwarded_text(gateway, 2) == "other AWS_VPC_000001"


def stream_content(body):
    """An SSE body's text deltas joined, its input_json_delta fragments joined and the type
    of every event, in order."""
    text, partial, types = "", "", []
    for block in body.decode().split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if not data:
            continue
        event = json.loads(data[0])
        types.append(event["type"])
        if event["type"] == "content_block_delta":
            delta = event["delta"]
            text += delta.get("text", "")
            partial += delta.get("partial_json", "")
    return text, partial, types


def test_sse_stream_is_restored_across_split_events(gateway):
    status, headers, body = post(gateway, message(USER_TEXT, stream=True))
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert "AWS_" in forwarded_text(gateway)

    text, partial, types = stream_content(body)
    assert text == "You said: " + USER_TEXT
    assert json.loads(partial) == {"text": USER_TEXT}
    assert types[-1] == "message_stop"


def test_store_down_fails_closed_with_nothing_forwarded(gateway):
    stop(gateway["redis"])
    status, headers, body = post(gateway, message(USER_TEXT))
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "mapping store" in error["error"]["message"]
    assert gateway["received"] == []


def test_status_reports_unhealthy_while_the_store_is_down(gateway):
    url = gateway["url"] + "/aws-masker/status"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert json.loads(response.read())["store"] == "ok"

    stop(gateway["redis"])

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=5)
    assert caught.value.code == 503
    status = json.loads(caught.value.read())
    assert status["status"] == "unhealthy"
    assert status["store"] == "unreachable"


def test_store_slower_than_its_timeout_fails_closed(gateway):
    store = redis.Redis(port=gateway["redis_port"], password=REDIS_PASSWORD)
    store.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    started = time.monotonic()
    status, _, body = post(gateway, message(USER_TEXT))
    elapsed = time.monotonic() - started
    assert status == 503, body
    assert json.loads(body)["error"]["type"] == "api_error"
    assert elapsed < 2.5  # read_timeout_ms is 1000
    assert gateway["received"] == []
    assert log_lines(gateway, "store_error=")


def test_malformed_json_is_rejected(gateway):
    status, _, body = post(gateway, b'{"model": "m", "messages": [')
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert gateway["received"] == []


def test_non_json_body_is_rejected(gateway):
    status, _, body = post(gateway, b"--b\r\n" + IDENTIFIERS[0].encode() + b"\r\n--b--",
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert gateway["received"] == []


def test_compressed_request_is_rejected(gateway):
    status, _, body = post(gateway, b"\x1f\x8b\x08\x00", headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert "Content-Encoding" in json.loads(body)["error"]["message"]
    assert gateway["received"] == []


def test_oversize_body_is_rejected(gateway):
    status, headers, body = post(gateway, message("x" * (MAX_BODY + 10)))
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["type"] == "request_too_large"
    assert gateway["received"] == []


def test_body_without_identifiers_passes_byte_for_byte(gateway):
    raw = b'{"model":"m", "max_tokens": 1.0E+3,"messages":[{"role":"user","content":"hi \\u00e9"}]}'
    status, _, _ = post(gateway, raw)
    assert status == 200
    assert gateway["received"][0][2] == raw


def test_status_and_log_line(gateway):
    post(gateway, message(USER_TEXT))
    with urllib.request.urlopen(gateway["url"] + "/aws-masker/status", timeout=5) as response:
        status = json.loads(response.read())
    assert status["status"] == "healthy"
    assert status["masked_requests"] == 1 and status["identifiers_masked"] == 5

    lines = log_lines(gateway, "aws_masker status=")
    log = gateway["log"].read_text()
    assert lines and "masked=5" in lines[-1] and "store_ms=" in lines[-1]
    for identifier in [*IDENTIFIERS, API_KEY]:
        assert identifier not in log


def post_chunked(gw, data, chunk=1000):
    """POST with Transfer-Encoding: chunked (no Content-Length), as streaming clients do."""
    conn = http.client.HTTPConnection("127.0.0.1", int(gw["url"].rsplit(":", 1)[1]), timeout=10)
    try:
        conn.putrequest("POST", "/v1/messages")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("x-api-key", API_KEY)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_chunked_request_body_is_masked(gateway):
    status, body = post_chunked(gateway, json.dumps(message(USER_TEXT)).encode(), chunk=7)
    assert status == 200, body
    _, sent_headers, raw = gateway["received"][0]
    assert int(sent_headers["Content-Length"]) == len(raw)
    assert IDENTIFIERS[0].encode() not in raw
    assert json.loads(body)["content"][1]["text"] == "You said: " + USER_TEXT


def test_chunked_oversize_body_is_rejected(gateway):
    status, body = post_chunked(gateway, json.dumps(message("y" * (MAX_BODY + 10))).encode())
    assert status == 413
    assert json.loads(body)["error"]["type"] == "request_too_large"
    assert gateway["received"] == []


def test_concurrent_requests_agree_on_tokens(gateway):
    shared = [f"i-{n:017x}" for n in range(1, 9)]
    texts = [" ".join(shared[k % 8:] + shared[:k % 8]) + f" own 10.9.{k}.1" for k in range(24)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda t: post(gateway, message(t))[0], texts))
    assert statuses == [200] * len(texts)

    token_of = {}
    for _, _, raw in gateway["received"]:
        masked = json.loads(raw)["messages"][-1]["content"].split(" ")
        # every request rotates the same eight IDs: undo the rotation by sorting the tokens
        tokens = masked[:8]
        assert all(t.startswith("AWS_EC2_") for t in tokens)
        for token in tokens:
            token_of.setdefault(token, 0)
            token_of[token] += 1
        assert masked[9].startswith("AWS_PRIVATE_IP_")
    assert len(token_of) == 8 and set(token_of.values()) == {len(texts)}
    numbers = sorted(int(t.rsplit("_", 1)[1]) for t in token_of)
    assert numbers == list(range(1, 9))


def test_body_buffered_to_a_file_is_read_back_and_masked(tmp_path):
    # Misconfigured on purpose: client_body_buffer_size below client_max_body_size.
    with running_gateway(tmp_path, body_buffer=1024) as gw:
        text = USER_TEXT + " " + "z" * 4000
        status, _, body = post(gw, message(text))
        assert status == 200, body
        raw = gw["received"][0][2]
        assert IDENTIFIERS[0].encode() not in raw
        assert json.loads(body)["content"][1]["text"] == "You said: " + text
        assert log_lines(gw, "body_file=1")


def test_upstream_down_gives_an_api_shaped_502(gateway):
    gateway["upstream"].shutdown()
    gateway["upstream"].server_close()
    status, headers, body = post(gateway, message("hello"))
    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["type"] == "api_error"


def test_fail_open_forwards_unmasked_and_says_so(tmp_path):
    with running_gateway(tmp_path, fail_mode="open") as gw:
        stop(gw["redis"])
        status, _, _ = post(gw, message("hello " + IDENTIFIERS[0]))
        assert status == 200
        assert forwarded_text(gw) == "hello " + IDENTIFIERS[0]
        assert log_lines(gw, "fail_open=1")


def redis_scopes(gw):
    """The scopes holding token mappings in the gateway's Redis."""
    client = redis.Redis(host="127.0.0.1", port=gw["redis_port"], password=REDIS_PASSWORD)
    return {key.decode().split(":")[1] for key in client.scan_iter("aws_masker:*:t:*")}


def test_scope_by_header_scopes_by_its_value_and_refuses_requests_without_it(tmp_path):
    with running_gateway(tmp_path, scope_by="header", scope_header="X-Team") as gw:
        for team in ("team-a", "team-b"):
            status, _, body = post(gw, message("stop " + IDENTIFIERS[0]),
                                   headers={"X-Team": team})
            assert status == 200, body
        # Same identifier, same API key, two teams: each has its own numbering and keys.
        assert forwarded_text(gw, 0) == forwarded_text(gw, 1) == "stop AWS_EC2_000001"
        assert len(redis_scopes(gw)) == 2

        status, headers, body = post(gw, message("stop " + IDENTIFIERS[0]))
        assert status == 400
        assert headers["Content-Type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error"
        assert "X-Team header is required" in error["message"]
        assert len(gw["received"]) == 2


def test_scope_by_global_shares_one_scope_between_api_keys(tmp_path):
    with running_gateway(tmp_path, scope_by="global") as gw:
        post(gw, message("stop " + IDENTIFIERS[0]))
        post(gw, message("stop " + IDENTIFIERS[0] + " and i-0fedcba9876543210"),
             headers={"x-api-key": "sk-ant-someone-else"})
        assert forwarded_text(gw, 0) == "stop AWS_EC2_000001"
        assert forwarded_text(gw, 1) == "stop AWS_EC2_000001 and AWS_EC2_000002"
        assert len(redis_scopes(gw)) == 1


@pytest.mark.parametrize("change, complaint", [
    ({"scope_secret": "short"}, "scope_secret"),
    ({"scope_by": "consumer"}, "scope_by"),
    ({"scope_by": "header"}, "scope_header"),
    ({"scope_by": "header", "scope_header": "x_team"}, "scope_header"),
    ({"fail_mode": "sometimes"}, "fail_mode"),
    ({"catalog_path": "/nonexistent/catalog.json"}, "catalog"),
])
def test_bad_configuration_stops_nginx_from_starting(tmp_path, change, complaint):
    with pytest.raises(RuntimeError), running_gateway(tmp_path, **change):
        pass
    assert complaint in (tmp_path / "error.log").read_text()


def test_every_mapping_key_of_a_request_gets_its_expiry_refreshed(gateway):
    """Sliding expiry: each use of an original resets the TTL of its o: and t: keys and of the
    sequence of its code (refreshed once per code and call, however many originals share it)."""
    client = redis.Redis(host="127.0.0.1", port=gateway["redis_port"], password=REDIS_PASSWORD)
    text = " ".join(IDENTIFIERS[:4])
    post(gateway, message("first " + text))
    keys = sorted(k.decode() for k in client.scan_iter("aws_masker:*")
                  if k.decode().split(":")[2] in ("o", "t", "seq"))
    # four originals of four codes (EC2, ARN, PRIVATE_IP, VPC): an o: and a t: key each
    assert [k.split(":")[2] for k in keys].count("seq") == 4
    assert len(keys) == 12
    for key in keys:
        assert 3500 < client.ttl(key) <= 3600, key
        client.expire(key, 50)
    post(gateway, message("again " + text))
    assert forwarded_text(gateway, 1) == forwarded_text(gateway, 0).replace("first", "again")
    for key in keys:
        assert 3500 < client.ttl(key) <= 3600, key
