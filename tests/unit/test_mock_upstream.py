"""The Messages API stand-in, exercised with the official anthropic SDK and with raw sockets."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import anthropic
import pytest

from tests.conftest import load_module

STUB_PATH = Path(__file__).resolve().parents[2] / "files" / "mock_upstream" / "anthropic_stub.py"
MODEL = "claude-sonnet-4-5"
API_KEY = "sk-ant-test-0123456789abcdef"

STREAM_EVENT_ORDER = ["message_start", "content_block_start", "ping"]
STREAM_EVENT_END = ["content_block_stop", "message_delta", "message_stop"]


stub_module = load_module("anthropic_stub", STUB_PATH)


class RunningStub:
    def __init__(self, record_file: Path):
        self.log = io.StringIO()
        self.received = stub_module.ReceivedLog(str(record_file))
        self.server = stub_module.StubServer(("127.0.0.1", 0), self.received, self.log)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.record_file = record_file
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.received.close()

    def request(self, method, path, body=None, headers=None):
        """One request on a fresh connection; returns (status, headers, decoded body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, response.headers, data

    def received_entries(self, limit=None):
        path = "/__stub/received" + (f"?limit={limit}" if limit is not None else "")
        status, _, data = self.request("GET", path)
        assert status == 200
        return json.loads(data)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    running = RunningStub(tmp_path_factory.mktemp("stub") / "received.jsonl")
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def forget_received(stub):
    stub.request("DELETE", "/__stub/received")


@pytest.fixture
def client(stub):
    return anthropic.Anthropic(base_url=stub.url, api_key=API_KEY, max_retries=0, timeout=10)


def message_body(text="hello", stream=False, **extra):
    body = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def raw_exchange(port, request_body: bytes, headers: dict) -> tuple[bytes, list[bytes]]:
    """Send one request on a raw socket; return the whole answer and every recv() piece."""
    head = [
        "POST /v1/messages HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(request_body)}",
        "Connection: close",
    ] + [f"{name}: {value}" for name, value in headers.items()]
    reads = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request_body)
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            reads.append(piece)
    return b"".join(reads), reads


def split_response(raw: bytes) -> tuple[str, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def dechunk(body: bytes) -> tuple[bytes, list[int]]:
    """Undo HTTP chunked framing; return the payload and the size of every chunk."""
    payload, sizes = [], []
    while True:
        line, _, body = body.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            return b"".join(payload), sizes
        sizes.append(size)
        payload.append(body[:size])
        body = body[size + 2:]


def sse_events(payload: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in payload.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


# --- The SDK against the stub ---------------------------------------------------------------


def test_sdk_message_echoes_the_last_user_message(client):
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[
            {"role": "user", "content": "first turn"},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": [
                {"type": "text", "text": "Instance AWS_EC2_000001 "},
                {"type": "text", "text": "runs in vpc-0a1b2c3d"},
            ]},
        ],
    )

    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Instance AWS_EC2_000001 runs in vpc-0a1b2c3d"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_sdk_echo_includes_tool_result_text(client):
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "i-0123456789abcdef0"},
        ]}],
    )

    assert message.content[0].text == "i-0123456789abcdef0"


def test_sdk_stream_yields_the_echo_in_deltas(client):
    text = "Ünïcode ✓ and AWS_EC2_000001 split over deltas"

    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}],
        extra_headers={"x-stub-delta-size": "5", "x-stub-chunk-size": "3",
                       "x-stub-chunk-delay-ms": "0"},
    ) as stream:
        streamed = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(streamed) == text
    assert len(streamed) == len(range(0, len(text), 5))
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.id.startswith("msg_")


def test_sdk_raw_stream_has_the_real_event_sequence(client):
    events = client.messages.create(
        model=MODEL, max_tokens=64, stream=True,
        messages=[{"role": "user", "content": "abcdefghij"}],
        extra_headers={"x-stub-delta-size": "4"},
    )
    kinds = [event.type for event in events]

    # The SDK drops ping events; the raw socket test below sees them.
    assert kinds == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + \
        STREAM_EVENT_END


def test_sdk_tool_use_streamed_and_not(client):
    tools = [{"name": "describe_instances", "description": "Looks up instances.",
              "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}]
    request = {
        "model": MODEL, "max_tokens": 64, "tools": tools,
        "messages": [{"role": "user", "content": "check i-0123456789abcdef0"}],
        "extra_headers": {"x-stub-tool-use": "1", "x-stub-delta-size": "3"},
    }

    message = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        fragments = [event.partial_json for event in stream if event.type == "input_json"]
        final = stream.get_final_message()

    for answer in (message, final):
        block = answer.content[0]
        assert answer.stop_reason == "tool_use"
        assert block.type == "tool_use"
        assert block.id.startswith("toolu_")
        assert block.name == "describe_instances"
        assert block.input == {"text": "check i-0123456789abcdef0"}
    assert json.loads("".join(fragments)) == {"text": "check i-0123456789abcdef0"}
    assert len(fragments) > 5


def test_tool_input_header_sets_the_exact_input(client):
    tool_input = {"i-0123456789abcdef0": "running", "ids": ["vpc-0a1b2c3d", 7]}

    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "states?"}],
        extra_headers={"x-stub-tool-input": json.dumps(tool_input)},
    ) as stream:
        final = stream.get_final_message()

    assert final.content[0].name == "echo"
    assert final.content[0].input == tool_input


def test_reply_header_replaces_the_echo(client):
    reply = "Restored ✓ AWS_EC2_000001 — naïve"

    message = client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "ignored"}],
        extra_headers={"x-stub-reply": json.dumps(reply)},
    )

    assert message.content[0].text == reply


def test_sdk_count_tokens_and_batches(client):
    counted = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "x" * 400}])
    batch = client.messages.batches.create(requests=[
        {"custom_id": "one", "params": message_body("first")},
        {"custom_id": "two", "params": message_body("second")},
    ])

    assert counted.input_tokens == 100
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2


@pytest.mark.parametrize("status, error_class, error_type", [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.InternalServerError, "overloaded_error"),
])
def test_status_header_answers_with_that_error(client, status, error_class, error_type):
    with pytest.raises(error_class) as raised:
        client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-stub-status": str(status)},
        )

    assert raised.value.status_code == status
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == error_type


def test_status_header_fails_a_stream_before_it_starts(client):
    stream = client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-stub-status": "529"},
    )

    with pytest.raises(anthropic.InternalServerError) as raised, stream as events:
        events.get_final_message()

    assert raised.value.status_code == 529


# --- Validation and routing -----------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
     "max_tokens: Field required"),
    ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
    ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages: Input should be"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "messages.0.role"),
    ("{not json", "not valid JSON"),
    ([1, 2], "must be a JSON object"),
])
def test_malformed_requests_get_anthropic_shaped_400(stub, body, message):
    status, headers, data = stub.request("POST", "/v1/messages", body)

    document = json.loads(data)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert document["type"] == "error"
    assert document["error"]["type"] == "invalid_request_error"
    assert message in document["error"]["message"]


@pytest.mark.parametrize("header, value", [
    ("x-stub-reply", "not json"),
    ("x-stub-reply", "[1]"),
    ("x-stub-chunk-size", "zero"),
    ("x-stub-status", "200"),
    ("x-stub-tool-input", '"a string"'),
])
def test_bad_stub_headers_are_rejected(stub, header, value):
    status, _, data = stub.request("POST", "/v1/messages", message_body(), {header: value})

    assert status == 400
    assert header in json.loads(data)["error"]["message"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/models"), ("GET", "/v1/messages"), ("POST", "/v2/messages"),
])
def test_other_paths_are_anthropic_shaped_404(stub, method, path):
    status, _, data = stub.request(method, path)

    assert status == 404
    assert json.loads(data)["error"]["type"] == "not_found_error"


def test_health(stub):
    status, _, data = stub.request("GET", "/health")

    assert status == 200
    assert json.loads(data) == {"status": "healthy"}


def test_query_strings_are_accepted_and_recorded(stub):
    status, _, _ = stub.request("POST", "/v1/messages?beta=true", message_body())

    assert status == 200
    assert stub.received_entries()[-1]["query"] == "beta=true"


# --- What was received ----------------------------------------------------------------------


def test_received_keeps_raw_body_and_hides_secrets(stub, client):
    client.messages.create(model=MODEL, max_tokens=8,
                           messages=[{"role": "user", "content": "first"}])
    # Odd spacing on purpose: the record must keep the bytes, not a re-encoding.
    raw_body = f'{{"model": "{MODEL}", "max_tokens": 8,  "messages":[{{"role":"user",' \
        '"content":"é"}]}'
    stub.request("POST", "/v1/messages", raw_body.encode("utf-8"),
                 {"authorization": "Bearer secret-token", "content-type": "application/json"})

    entries = stub.received_entries()

    assert [entry["path"] for entry in entries] == ["/v1/messages", "/v1/messages"]
    assert entries[0]["seq"] < entries[1]["seq"]
    assert json.loads(entries[0]["body"])["messages"][0]["content"] == "first"
    assert entries[0]["headers"]["anthropic-version"]
    # SDK versions differ in how they send the key; whichever header carries it is redacted.
    sent = {name: value for name, value in entries[0]["headers"].items()
            if name in ("x-api-key", "authorization")}
    assert sent and all(value.startswith("[redacted sha256:") for value in sent.values())
    assert entries[1]["body"] == raw_body
    assert entries[1]["body_bytes"] == len(raw_body.encode("utf-8"))
    assert entries[1]["headers"]["authorization"].startswith("[redacted sha256:")
    dumped = json.dumps(entries)
    assert API_KEY not in dumped
    assert "secret-token" not in dumped


def test_received_limit_returns_the_newest_last(stub):
    for text in ("one", "two", "three"):
        stub.request("POST", "/v1/messages", message_body(text))

    latest = stub.received_entries(limit=2)

    assert [json.loads(entry["body"])["messages"][0]["content"] for entry in latest] == \
        ["two", "three"]
    assert len(stub.received_entries(limit=10)) == 3
    assert stub.received_entries(limit=0) == []


def test_received_skips_control_paths_and_can_be_cleared(stub):
    stub.request("POST", "/v1/messages", message_body())
    stub.request("GET", "/health")
    assert len(stub.received_entries()) == 1

    status, _, data = stub.request("DELETE", "/__stub/received")

    assert status == 200
    assert json.loads(data) == {"cleared": 1}
    assert stub.received_entries() == []


def test_failed_requests_are_recorded_too(stub):
    stub.request("POST", "/v1/messages", message_body(), {"x-stub-status": "500"})
    stub.request("GET", "/v1/unknown")

    assert [entry["path"] for entry in stub.received_entries()] == ["/v1/messages",
                                                                    "/v1/unknown"]


def test_record_file_is_appended_and_survives_clearing(stub):
    marker = "record-file-marker"
    stub.request("POST", "/v1/messages", message_body(marker))
    stub.request("DELETE", "/__stub/received")

    lines = stub.record_file.read_text(encoding="utf-8").splitlines()

    assert any(marker in json.loads(line)["body"] for line in lines)


def test_chunked_request_bodies_are_read(stub):
    body = json.dumps(message_body("sent in chunks")).encode("utf-8")
    connection = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=10)
    connection.request("POST", "/v1/messages", body=iter([body[:10], body[10:]]),
                       headers={"content-type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()

    assert response.status == 200
    assert json.loads(response.read())["content"][0]["text"] == "sent in chunks"
    assert stub.received_entries()[-1]["body"] == body.decode("utf-8")


def test_connections_are_kept_alive(stub):
    connection = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=10)
    for text in ("one", "two"):
        connection.request("POST", "/v1/messages", body=json.dumps(message_body(text)))
        response = connection.getresponse()
        assert json.loads(response.read())["content"][0]["text"] == text
        connection.request("POST", "/v1/messages", body=json.dumps(message_body(text, True)))
        response = connection.getresponse()
        assert b"message_stop" in response.read()
    connection.close()


# --- Chunking, compression, delays ----------------------------------------------------------


def test_chunk_size_splits_the_stream_at_arbitrary_bytes(stub):
    text = "Instance AWS_EC2_000001 ✓ é"
    body = json.dumps(message_body(text, stream=True)).encode("utf-8")

    raw, reads = raw_exchange(stub.port, body, {"x-stub-chunk-size": "7"})
    head, framed = split_response(raw)
    payload, sizes = dechunk(framed)
    events = sse_events(payload)

    assert head.startswith("HTTP/1.1 200")
    assert "text/event-stream" in head
    assert max(sizes) <= 7
    assert len(sizes) == -(-len(payload) // 7)
    assert len(reads) > 20
    kinds = [name for name, _ in events]
    assert kinds[:3] == STREAM_EVENT_ORDER
    assert kinds[-3:] == STREAM_EVENT_END
    assert "".join(data["delta"]["text"] for name, data in events
                   if name == "content_block_delta") == text


def test_chunk_size_one_splits_multibyte_characters(stub):
    body = json.dumps(message_body("é✓", stream=True)).encode("utf-8")

    raw, _ = raw_exchange(stub.port, body, {"x-stub-chunk-size": "1",
                                            "x-stub-chunk-delay-ms": "0"})
    payload, sizes = dechunk(split_response(raw)[1])

    assert set(sizes) == {1}
    assert "é✓" in payload.decode("utf-8")


def test_chunk_size_splits_json_answers(stub):
    body = json.dumps(message_body("split JSON")).encode("utf-8")

    raw, reads = raw_exchange(stub.port, body, {"x-stub-chunk-size": "16"})
    head, payload = split_response(raw)

    assert "content-length:" in head.lower()
    assert len(reads) > 10
    assert json.loads(payload)["content"][0]["text"] == "split JSON"


def test_gzip_when_the_client_accepts_it(stub):
    json_raw, _ = raw_exchange(stub.port, json.dumps(message_body("zipped")).encode(),
                               {"accept-encoding": "gzip"})
    stream_raw, _ = raw_exchange(stub.port, json.dumps(message_body("zipped", True)).encode(),
                                 {"accept-encoding": "gzip, deflate", "x-stub-chunk-size": "9"})
    plain_raw, _ = raw_exchange(stub.port, json.dumps(message_body("plain")).encode(),
                                {"accept-encoding": "identity"})

    json_head, json_body = split_response(json_raw)
    stream_head, stream_body = split_response(stream_raw)
    assert "content-encoding: gzip" in json_head
    assert json.loads(gzip.decompress(json_body))["content"][0]["text"] == "zipped"
    assert "content-encoding: gzip" in stream_head
    events = sse_events(zlib.decompress(dechunk(stream_body)[0], 16 + zlib.MAX_WBITS))
    assert events[-1][0] == "message_stop"
    assert "content-encoding" not in split_response(plain_raw)[0]


WINDOWS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
           "deflate": zlib.MAX_WBITS, "deflate-raw": -zlib.MAX_WBITS}


def forced_exchange(stub, stream, encoding, **headers):
    """An answer the stub compresses although the request accepts no encoding: its head and
    its payload (chunked framing undone)."""
    raw, _ = raw_exchange(stub.port, json.dumps(message_body("forced é😀", stream)).encode(),
                          {"x-stub-content-encoding": encoding, **headers})
    head, body = split_response(raw)
    return head, dechunk(body)[0] if stream else body


def inflate_members(data: bytes, window: int) -> tuple[bytes, int, bool]:
    """Decodes stream after stream (gzip members); returns the bytes, the streams read to
    their end and whether the data ended exactly at the end of one."""
    out, members = b"", 0
    while data:
        decoder = zlib.decompressobj(window)
        out += decoder.decompress(data)
        if not decoder.eof:
            return out, members, False
        members += 1
        data = decoder.unused_data
    return out, members, True


@pytest.mark.parametrize("encoding", sorted(WINDOWS))
def test_content_encoding_header_forces_a_compressed_answer(stub, encoding):
    sent_name = "deflate" if encoding == "deflate-raw" else encoding
    head, body = forced_exchange(stub, False, encoding)
    assert f"content-encoding: {sent_name}\r\n" in head
    assert f"content-length: {len(body)}" in head.split("\r\n")
    text, members, whole = inflate_members(body, WINDOWS[encoding])
    assert (members, whole) == (1, True)
    assert json.loads(text)["content"][0]["text"] == "forced é😀"

    head, body = forced_exchange(stub, True, encoding, **{"x-stub-chunk-size": "5"})
    assert f"content-encoding: {sent_name}\r\n" in head
    text, members, whole = inflate_members(body, WINDOWS[encoding])
    assert (members, whole) == (1, True)
    events = sse_events(text)
    assert events[-1][0] == "message_stop"
    assert "".join(e[1]["delta"].get("text", "") for e in events
                   if e[0] == "content_block_delta") == "forced é😀"


def test_each_event_is_decodable_as_soon_as_it_arrives(stub):
    _, body = forced_exchange(stub, True, "gzip")
    # The bytes up to the first flush marker hold the first event, whole.
    first_flush = body.index(b"\x00\x00\xff\xff") + 4
    text = zlib.decompressobj(WINDOWS["gzip"]).decompress(body[:first_flush])
    assert [name for name, _ in sse_events(text)] == ["message_start"]
    assert text.endswith(b"\n\n")


def test_gzip_members_header_writes_several_members(stub):
    _, body = forced_exchange(stub, False, "gzip", **{"x-stub-gzip-members": "1"})
    text, members, whole = inflate_members(body, WINDOWS["gzip"])
    assert (members, whole) == (2, True)
    assert json.loads(text)["content"][0]["text"] == "forced é😀"

    _, body = forced_exchange(stub, True, "x-gzip", **{"x-stub-gzip-members": "1"})
    text, members, whole = inflate_members(body, WINDOWS["gzip"])
    events = sse_events(text)
    assert whole and members == len(events) > 5
    assert events[-1][0] == "message_stop"


@pytest.mark.parametrize("encoding", sorted(WINDOWS))
def test_encoding_faults_break_the_compressed_data_only(stub, encoding):
    for stream in (False, True):
        head, body = forced_exchange(stub, stream, encoding,
                                     **{"x-stub-encoding-fault": "truncate"})
        assert head.startswith("HTTP/1.1 200 ")
        text, _, whole = inflate_members(body, WINDOWS[encoding])
        assert not whole
        if stream:  # every event but the end of the compressed data arrived
            assert sse_events(text)[-1][0] == "message_stop"

        _, body = forced_exchange(stub, stream, encoding, **{"x-stub-encoding-fault": "corrupt"})
        decoder = zlib.decompressobj(WINDOWS[encoding])
        with pytest.raises(zlib.error, match="invalid block type"):
            decoder.decompress(body)

    # A stream is broken in its middle: the events before it were whole.
    _, body = forced_exchange(stub, True, encoding, **{"x-stub-encoding-fault": "corrupt"})
    decoder, events = zlib.decompressobj(WINDOWS[encoding]), b""
    with contextlib.suppress(zlib.error):
        for i in range(len(body)):
            events += decoder.decompress(body[i:i + 1])
    names = [name for name, _ in sse_events(events)]
    assert names[:3] == STREAM_EVENT_ORDER and "message_stop" not in names


@pytest.mark.parametrize("headers", [
    {"x-stub-content-encoding": "br"},
    {"x-stub-gzip-members": "1"},
    {"x-stub-content-encoding": "deflate", "x-stub-gzip-members": "1"},
    {"x-stub-encoding-fault": "corrupt"},
    {"x-stub-content-encoding": "gzip", "x-stub-encoding-fault": "sometimes"},
], ids=["unknown_coding", "members_alone", "members_of_deflate", "fault_alone", "bad_fault"])
def test_bad_encoding_headers_get_a_400(stub, headers):
    status, _, data = stub.request("POST", "/v1/messages", message_body(), headers)
    assert status == 400
    assert json.loads(data)["error"]["type"] == "invalid_request_error"


def test_delay_header_holds_the_answer(stub):
    started = time.monotonic()
    status, _, _ = stub.request("POST", "/v1/messages", message_body(), {"x-stub-delay-ms": "300"})

    assert status == 200
    assert time.monotonic() - started >= 0.3


def test_one_log_line_per_request(stub):
    probe = f"/v1/log-probe-{time.monotonic_ns()}"
    stub.request("POST", probe, message_body("log me"))

    # A line is written once its answer is out, so it may trail the response a little.
    deadline = time.monotonic() + 5
    while probe not in stub.log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = [line for line in stub.log.getvalue().splitlines() if probe in line]

    assert len(lines) == 1
    assert re.search(rf" method=POST path={probe} status=404 .*duration_ms=", lines[0])
    assert "log me" not in stub.log.getvalue()


# --- The command line -----------------------------------------------------------------------


def test_command_line_serves_records_and_stops_on_sigterm(tmp_path):
    record_file = tmp_path / "nested" / "received.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(STUB_PATH), "--host", "127.0.0.1", "--port", "0",
         "--record-file", str(record_file)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        first_line = process.stderr.readline()
        port = int(re.search(r"port=(\d+)", first_line).group(1))
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=API_KEY,
                                     max_retries=0, timeout=10)

        message = client.messages.create(model=MODEL, max_tokens=8,
                                         messages=[{"role": "user", "content": "cli"}])

        assert message.content[0].text == "cli"
        assert json.loads(record_file.read_text().splitlines()[-1])["path"] == "/v1/messages"
    finally:
        process.send_signal(signal.SIGTERM)
        remaining = process.communicate(timeout=10)[1]

    assert process.returncode == 0
    assert "status=200" in remaining
    assert "event=stopped" in remaining
