"""The nginx_lua engine with an upstream that compresses its answers although asked not to.

Each test runs the private gateway of test_gateway_nginx (its own redis-server and nginx) in
front of the project's Messages API stand-in (files/mock_upstream/anthropic_stub.py), which the
x-stub-* headers of a request make answer gzip, x-gzip, deflate or raw deflate, in gzip
members, cut into small writes, or broken (corrupt or truncated data). The gateway must decode
the answer, restore its tokens exactly and send it uncompressed, or end it with a clear error.
"""

import io
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import test_gateway_nginx as base
from test_gateway_nginx import USER_TEXT, log_lines, message, post, stream_content

from tests.conftest import load_module

STUB_PATH = Path(__file__).resolve().parents[2] / "files" / "mock_upstream" / "anthropic_stub.py"
stub_module = load_module("anthropic_stub", STUB_PATH)

ENCODINGS = ["gzip", "x-gzip", "deflate", "deflate-raw"]


def start_stub():
    received = stub_module.ReceivedLog(None)
    server = stub_module.StubServer(("127.0.0.1", 0), received, io.StringIO())
    server.received = received
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def gw(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "start_upstream", start_stub)
    with base.running_gateway(tmp_path) as gateway:
        yield gateway


def forwarded(gw):
    """The user text of the last request that reached the stub."""
    entry = gw["received"].latest(1)[0]
    return json.loads(entry["body"])["messages"][-1]["content"]


def counter_reaches(gw, name, value, timeout=5.0):
    """Whether a status counter reaches value (the log phase counts after the answer left)."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(gw["url"] + "/aws-masker/status", timeout=5) as response:
            if json.loads(response.read())[name] == value:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def assert_plain(headers, body):
    """The answer left the gateway uncompressed, with no stale length."""
    assert headers.get("Content-Encoding") is None
    assert headers.get("Content-Length") in (None, str(len(body)))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_compressed_json_and_sse_answers_are_decoded_and_restored(gw, encoding):
    steer = {"x-stub-content-encoding": encoding, "x-stub-chunk-size": "7"}
    status, headers, body = post(gw, message(USER_TEXT), headers=steer)
    assert status == 200, body
    assert "AWS_EC2_" in forwarded(gw)  # the upstream saw tokens, the client sees originals
    assert_plain(headers, body)
    assert json.loads(body)["content"][0]["text"] == USER_TEXT

    steer.update({"x-stub-tool-use": "1", "x-stub-delta-size": "5"})
    status, headers, body = post(gw, message(USER_TEXT, stream=True), headers=steer)
    assert status == 200, body
    assert_plain(headers, body)
    _, partial, types = stream_content(body)
    assert json.loads(partial) == {"text": USER_TEXT}
    assert types[-1] == "message_stop"
    assert b"AWS_" not in body

    assert counter_reaches(gw, "responses_decoded", 2)
    lines = log_lines(gw, "decoded=")
    assert len(lines) == 2
    for line in lines:
        assert " decoded=" + ("gzip" if "gzip" in encoding else "deflate") + " " in line
        assert "restore_error" not in line


def test_gzip_of_many_members_split_at_every_byte_is_restored(gw):
    steer = {"x-stub-content-encoding": "gzip", "x-stub-gzip-members": "1",
             "x-stub-chunk-size": "1", "x-stub-chunk-delay-ms": "0"}
    status, headers, body = post(gw, message(USER_TEXT, stream=True), headers=steer)
    assert status == 200, body
    assert_plain(headers, body)
    text, _, types = stream_content(body)
    assert text == USER_TEXT
    assert types[-1] == "message_stop"

    status, _, body = post(gw, message(USER_TEXT), headers=steer)
    assert status == 200, body
    assert json.loads(body)["content"][0]["text"] == USER_TEXT


def assert_decode_error(message_text):
    assert "gzip data" in message_text
    assert message_text.endswith("the answer could not be restored")


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_broken_gzip_ends_the_answer_with_a_clear_error(gw, fault):
    steer = {"x-stub-content-encoding": "gzip", "x-stub-encoding-fault": fault,
             "x-stub-chunk-size": "9"}

    # JSON: the status line left with the headers, so the error takes the body's place.
    status, headers, body = post(gw, message(USER_TEXT), headers=steer)
    assert status == 200
    assert_plain(headers, body)
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert_decode_error(error["error"]["message"])
    assert USER_TEXT.encode() not in body

    # SSE: the events decoded before the break, then an error event ends the stream.
    status, headers, body = post(gw, message(USER_TEXT, stream=True), headers=steer)
    assert status == 200
    assert_plain(headers, body)
    events = body.decode().split("\n\n")
    assert events[-1] == ""
    name, data = events[-2].split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))
    assert error["error"]["type"] == "api_error"
    assert_decode_error(error["error"]["message"])
    _, _, types = stream_content(body)
    assert types[0] == "message_start" and types[-1] == "error"
    if fault == "truncate":  # every event arrived; only the end of the gzip data is missing
        assert "message_stop" in types
    else:
        assert "message_stop" not in types

    assert counter_reaches(gw, "response_decode_errors", 2)
    assert len(log_lines(gw, "restore_error=")) == 2
    assert post(gw, message(USER_TEXT))[0] == 200  # the workers live on
