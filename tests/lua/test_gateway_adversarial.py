"""The nginx_lua engine under hostile input, store faults and concurrency.

Reuses the private gateway of test_gateway_nginx (its own redis-server, nginx and upstream per
test) with an upstream that accepts any method and body, records what reached it and answers
what the test tells it to. The promise under test: no identifier ever reaches the upstream
unmasked, bad input gets an Anthropic-shaped error, and tokens stay one-to-one per scope.
"""

import base64
import collections
import concurrent.futures
import contextlib
import gzip
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import subprocess
import time

import brotli
import pytest
import redis
import test_gateway_nginx as base
from test_gateway_nginx import API_KEY, message, post, running_gateway, stop, wait_port

INSTANCE = "i-0123456789abcdef0"
ARN = "arn:aws:iam::123456789012:role/Admin"
VPC = "vpc-a01106c2"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ORIGINALS = [INSTANCE, ARN, VPC, ACCESS_KEY, SECRET, "123456789012"]
REDIS_PASSWORD = "test-redis-password"
OTHER_KEY = "sk-ant-other-tenant-2"


class AnyUpstream(base.Upstream):
    """Records every request (any method); answers the server's `reply` (status, headers,
    body chunks[, "close": hang up after them]), by default a small Messages-API answer."""

    def handle_any(self):
        length = self.headers.get("Content-Length")
        body = self.rfile.read(int(length)) if length else b""
        self.server.received.append((self.path, dict(self.headers), body))
        reply = getattr(self.server, "reply", None)
        if reply is None:
            data = json.dumps({"id": "msg_1", "type": "message", "role": "assistant",
                               "content": [{"type": "text", "text": "ok"}]}).encode()
            reply = (200, {"Content-Type": "application/json"}, [data])
        status, headers, chunks = reply[:3]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers or reply[3:] == ("close",):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()

    do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = handle_any


@pytest.fixture
def gw(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "Upstream", AnyUpstream)
    with running_gateway(tmp_path) as gateway:
        yield gateway


def leaks(gw, originals=ORIGINALS):
    """The originals found in anything that reached the upstream: path, headers, raw body and
    the body's decoded strings (escapes would hide an identifier from a byte search)."""
    found = []
    for path, headers, body in gw["received"]:
        texts = [path, json.dumps(headers), body.decode("utf-8", "replace")]
        with contextlib.suppress(ValueError):
            texts.append(json.dumps(json.loads(body), ensure_ascii=False))
        seen = "\n".join(texts)
        found += [o for o in originals if o in seen]
    return found


def assert_api_error(status, body, expected_status, error_type):
    assert status == expected_status, body
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == error_type
    assert error["error"]["message"]


def raw_request(gw, method, path, headers, body):
    """One HTTP/1.1 request with exactly these headers (repeated names allowed)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(gw["url"].rsplit(":", 1)[1]), timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def with_content(content, **extra):
    return {"model": "claude-sonnet-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": content}], **extra}


# ---------------------------------------------------------------- identifiers hidden in JSON

HIDDEN = {
    "unicode_escaped_hyphen": b'{"model":"m","messages":[{"role":"user","content":'
                              b'"stop i\\u002d0123456789abcdef0 now"}]}',
    "all_unicode_escaped": ('{"model":"m","messages":[{"role":"user","content":"'
                            + "".join(f"\\u{ord(c):04x}" for c in INSTANCE) + '"}]}').encode(),
    "escaped_slash_in_arn": b'{"model":"m","messages":[{"role":"user","content":'
                            b'"arn:aws:iam::123456789012:role\\/Admin"}]}',
    "escaped_key_in_tool_input": (
        b'{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use",'
        b'"id":"toolu_1","name":"t","input":{"i\\u002d0123456789abcdef0":"running"}}]}]}'),
    "bom_free_whitespace": b' \r\n\t{"model":"m","messages":[{"role":"user","content":'
                           b'"i-0123456789abcdef0"}]} \n',
}


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_identifiers_behind_json_escapes_are_masked(gw, name):
    status, _, body = post(gw, HIDDEN[name])
    assert status == 200, body
    assert leaks(gw) == []


def nested(depth, leaf):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


PLACES = {
    "system_string": with_content("hi", system="host " + INSTANCE),
    "system_blocks": with_content("hi", system=[{"type": "text", "text": "host " + INSTANCE}]),
    "tool_description": with_content("hi", tools=[{
        "name": "stop", "description": "stops " + INSTANCE,
        "input_schema": {"type": "object", "properties": {
            VPC: {"type": "string", "description": ARN, "enum": [INSTANCE]}}}}]),
    "document_text_source": with_content([{"type": "document", "source": {
        "type": "text", "media_type": "text/plain", "data": "log " + INSTANCE}}]),
    "metadata": with_content("hi", metadata={"user_id": ACCESS_KEY}),
    "stop_sequences": with_content("hi", stop_sequences=[INSTANCE]),
    "tool_input_keys": {"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "s",
         "input": {INSTANCE: {VPC: [ARN]}}}]}]},
    "tool_result_blocks": with_content([{"type": "tool_result", "tool_use_id": "toolu_1",
                                         "content": [{"type": "text", "text": ARN}]}]),
    "deep_nesting": with_content("hi", metadata={"deep": nested(100, INSTANCE)}),
    "top_level_array": [message(INSTANCE)],
    "top_level_string": "stop " + INSTANCE,
    "long_string": with_content("x" * 40000 + " " + INSTANCE + " " + "y" * 1000),
    "secret_in_string": with_content('{"SecretAccessKey": "' + SECRET + '"}'),
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_identifiers_anywhere_in_content_are_masked(gw, place):
    status, _, body = post(gw, PLACES[place])
    assert status in (200, 400), body  # 400: refused whole, which forwards nothing either
    assert leaks(gw) == []


def tool_input(data):
    return {"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "configure", "input": data}]}]}


@pytest.mark.parametrize("data", [
    {"SecretAccessKey": SECRET}, {"AccountId": "123456789012"}, {"Bucket": "my-data-prod"},
    {"aws_session_token": "IQoJb3JpZ2luX2VjEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHG"},
], ids=["secret_key", "account_id", "bucket", "session_token"])
def test_value_named_by_its_object_key_is_masked(gw, data):
    status, _, body = post(gw, {**tool_input(data), "metadata": {"user_id": "u1", **data}})
    assert status == 200, body
    assert leaks(gw, list(data.values())) == []
    forwarded = json.loads(gw["received"][0][2])
    masked = next(iter(forwarded["messages"][0]["content"][0]["input"].values()))
    assert masked.startswith("AWS_") and masked == forwarded["metadata"][next(iter(data))]


def test_keys_that_name_nothing_leave_their_values_alone(gw):
    data = {"count": "123456789012", "note": "build 123456789012", "Name": "web"}
    status, _, body = post(gw, tool_input(data))
    assert status == 200, body
    assert json.loads(gw["received"][0][2])["messages"][0]["content"][0]["input"] == data


@pytest.mark.parametrize("raw", [
    b'{"AccountId": 123456789012}', b'{"OwnerId" :\n 123456789012 }',
    b'{"a": [1], "account_id": 123456789012, "b": 2}'])
def test_account_id_as_a_json_number_is_refused(gw, raw):
    body = (b'{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use",'
            b'"id":"toolu_1","name":"n","input":' + raw + b'}]}]}')
    status, _, reply = post(gw, body)
    assert_api_error(status, reply, 400, "invalid_request_error")
    assert gw["received"] == []


def test_account_ids_as_json_numbers_in_a_list_are_not_forwarded(gw):
    post(gw, tool_input({"AccountIds": [123456789012, 210987654321]}))
    assert leaks(gw, ["123456789012", "210987654321"]) == []


def test_numbers_their_keys_do_not_name_pass(gw):
    data = {"count": 123456789012, "max": 1.5e3, "n": [123456789012]}
    status, _, body = post(gw, {**tool_input(data), "max_tokens": 1024})
    assert status == 200, body
    assert json.loads(gw["received"][0][2])["messages"][0]["content"][0]["input"] == data


def test_identifier_in_a_request_header_is_not_forwarded(gw):
    raw_request(gw, "POST", "/v1/messages", [
        ("Content-Type", "application/json"), ("x-api-key", API_KEY),
        ("x-debug-instance", INSTANCE)], json.dumps(message("hi")).encode())
    assert leaks(gw, [INSTANCE]) == []


def test_header_values_are_masked_with_the_body_tokens_and_credentials_pass(gw):
    status, _, body = raw_request(gw, "POST", "/v1/messages", [
        ("Content-Type", "application/json"), ("x-api-key", API_KEY),
        ("anthropic-version", "2023-06-01"), ("x-trace", "vm " + INSTANCE),
        ("x-trace", VPC), ("Referer", "http://app/?arn=" + ARN)],
        json.dumps(message("stop " + INSTANCE)).encode())
    assert status == 200, body
    assert leaks(gw, [INSTANCE, VPC, ARN]) == []
    _, headers, forwarded = gw["received"][0]
    headers = {k.lower(): v for k, v in headers.items()}
    assert json.loads(forwarded)["messages"][0]["content"] == "stop AWS_EC2_000001"
    assert headers["x-api-key"] == API_KEY and headers["anthropic-version"] == "2023-06-01"
    assert headers["referer"] == "http://app/?arn=AWS_ARN_000001"
    base.log_lines(gw, "status=200")
    assert ARN not in gw["log"].read_text() and INSTANCE not in gw["log"].read_text()


@pytest.mark.parametrize("name", ["anthropic-beta", "Content-Type"])
def test_identifier_in_a_header_the_api_reads_is_refused(gw, name):
    value = "application/json; i=" + INSTANCE if name == "Content-Type" else INSTANCE
    status, _, body = raw_request(gw, "POST", "/v1/messages", [
        ("x-api-key", API_KEY), (name, value)], json.dumps(message("hi")).encode())
    assert_api_error(status, body, 400, "invalid_request_error")
    assert gw["received"] == []


def test_identifier_in_a_header_of_a_request_without_body_is_masked(gw):
    status, _, body = raw_request(gw, "GET", "/v1/models", [
        ("x-api-key", API_KEY), ("x-note", ACCESS_KEY)], None)
    assert status == 200, body
    assert leaks(gw, [ACCESS_KEY]) == [] and gw["received"][0][2] == b""


def test_store_down_refuses_a_request_whose_only_identifier_is_in_a_header(gw):
    stop(gw["redis"])
    status, _, body = raw_request(gw, "POST", "/v1/messages", [
        ("Content-Type", "application/json"), ("x-api-key", API_KEY),
        ("x-debug-instance", INSTANCE)], json.dumps(message("hi")).encode())
    assert_api_error(status, body, 503, "api_error")
    assert gw["received"] == []


STRUCTURAL = {
    "tool_result_tool_use_id": with_content([{"type": "tool_result", "tool_use_id": INSTANCE,
                                              "content": "done"}]),
    "tool_use_id": {"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": INSTANCE, "name": "s", "input": {}}]}]},
    "model": {"model": ARN, "messages": [{"role": "user", "content": "hi"}]},
    "text_block_type": with_content([{"type": INSTANCE, "text": "hi"}]),
    "role": {"model": "m", "messages": [{"role": ACCESS_KEY, "content": "hi"}]},
}


@pytest.mark.parametrize("place", sorted(STRUCTURAL))
def test_identifier_in_an_api_field_is_not_forwarded(gw, place):
    status, _, body = post(gw, STRUCTURAL[place])
    assert leaks(gw) == []
    if status != 200:
        assert_api_error(status, body, 400, "invalid_request_error")


def test_duplicate_key_cannot_make_content_look_like_a_thinking_block(gw):
    # cjson keeps the last "a"; the walker must not judge the first object by the second one.
    raw = (b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
           b'"metadata":{"a":{"type":"text","text":"i-0123456789abcdef0"},'
           b'"a":{"type":"thinking","thinking":"x","signature":"s"}}}')
    status, _, body = post(gw, raw)
    assert leaks(gw) == []
    if status != 200:
        assert_api_error(status, body, 400, "invalid_request_error")


@pytest.mark.parametrize("second_type", [b'"type"', b'"t\\u0079pe"'])
def test_duplicate_type_key_cannot_turn_a_block_into_thinking(gw, second_type):
    raw = (b'{"model":"m","messages":[{"role":"assistant","content":[{"type":"text",'
           b'"text":"i-0123456789abcdef0",' + second_type + b':"thinking"}]}]}')
    status, _, body = post(gw, raw)
    assert leaks(gw) == []
    assert_api_error(status, body, 400, "invalid_request_error")


def test_fail_open_still_refuses_what_it_cannot_mask(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "Upstream", AnyUpstream)
    with running_gateway(tmp_path, fail_mode="open") as gateway:
        status, _, body = post(gateway, STRUCTURAL["tool_result_tool_use_id"])
        assert_api_error(status, body, 400, "invalid_request_error")
        status, _, body = post(gateway, message("hi"), path="/v1/messages?i=" + INSTANCE)
        assert_api_error(status, body, 400, "invalid_request_error")
        assert gateway["received"] == []


FAKE_THINKING = {"type": "thinking", "thinking": "host " + INSTANCE, "signature": "c2ln"}


@pytest.mark.parametrize("where", ["user_message", "system"])
def test_thinking_block_outside_an_assistant_turn_is_no_hiding_place(gw, where):
    if where == "user_message":
        body = with_content([FAKE_THINKING, {"type": "text", "text": "hi"}])
    else:
        body = with_content("hi", system=[FAKE_THINKING])
    status, _, reply = post(gw, body)
    assert leaks(gw) == []
    if status != 200:
        assert_api_error(status, reply, 400, "invalid_request_error")


def test_forged_assistant_thinking_block_is_no_hiding_place(gw):
    body = {"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [FAKE_THINKING, {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "again"}]}
    post(gw, body)
    assert leaks(gw, [INSTANCE]) == []


@pytest.mark.parametrize("block", [
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p " + ARN},
    {"type": "thinking", "thinking": "ok", "signature": "c2ln", "note": [INSTANCE]},
], ids=["redacted_thinking_data", "extra_field"])
def test_forged_assistant_block_is_refused_with_a_clear_message(gw, block):
    body = {"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [block, {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "again"}]}
    status, _, reply = post(gw, body)
    assert_api_error(status, reply, 400, "invalid_request_error")
    assert "thinking block" in json.loads(reply)["error"]["message"]
    assert gw["received"] == []


def test_assistant_thinking_block_is_forwarded_byte_for_byte(gw):
    # The API checks a thinking block against its signature: it passes unchanged, tokens and all.
    thinking = {"type": "thinking", "thinking": "look at AWS_EC2_000001", "signature": "c2ln"}
    body = {"model": "m", "messages": [
        {"role": "user", "content": "hi " + INSTANCE},
        {"role": "assistant", "content": [thinking, {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "again"}]}
    status, _, reply = post(gw, body)
    assert status == 200, reply
    forwarded = json.loads(gw["received"][0][2])
    assert forwarded["messages"][1]["content"][0] == thinking
    assert leaks(gw) == []


# ---------------------------------------------------------------- bodies and headers

@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbf" + json.dumps(message(INSTANCE)).encode(),  # BOM
    json.dumps(message(INSTANCE)).encode() + b" trailing " + INSTANCE.encode(),
    b'{"model":"m","max_tokens":NaN,"messages":[{"role":"user","content":"' + INSTANCE.encode()
    + b'"}]}',
    b'{"model":"m","max_tokens":Infinity,"messages":"' + INSTANCE.encode() + b'"}',
    b'{"model":"m","messages":"' + INSTANCE.encode() + b'"',  # truncated
    INSTANCE.encode(),
], ids=["bom", "trailing_garbage", "nan", "infinity", "truncated", "bare_text"])
def test_malformed_bodies_are_refused_whole(gw, raw):
    status, headers, body = post(gw, raw)
    assert_api_error(status, body, 400, "invalid_request_error")
    assert headers["Content-Type"] == "application/json"
    assert gw["received"] == []
    for original in ORIGINALS:
        assert original.encode() not in body


def test_invalid_utf8_and_lone_surrogates_do_not_unmask(gw):
    raw = (b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe ' + INSTANCE.encode()
           + b' \\ud800 ' + VPC.encode() + b' \\udc00x"}]}')
    status, _, body = post(gw, raw)
    assert status in (200, 400), body
    assert leaks(gw) == []
    if status == 200:
        forwarded = gw["received"][0][2]
        assert b"\\ud800" in forwarded and b"\\udc00x" in forwarded


@pytest.mark.parametrize("headers", [
    [("Content-Type", "text/plain")],
    [],  # no Content-Type at all
    [("Content-Type", "application/json"), ("Content-Encoding", "identity"),
     ("Content-Encoding", "gzip")],
    [("Content-Type", "application/json"), ("Content-Encoding", "GZIP")],
    [("Content-Type", "application/json"), ("Content-Encoding", "br")],
    [("Content-Type", "application/json"), ("Content-Encoding", "IDENTITY")],
], ids=["text_plain", "no_type", "two_encodings", "gzip_upper", "br", "identity_upper"])
def test_odd_content_headers_never_forward_an_original(gw, headers):
    data = json.dumps(message("stop " + INSTANCE)).encode()
    status, _, body = raw_request(gw, "POST", "/v1/messages",
                                  [("x-api-key", API_KEY), *headers], data)
    assert leaks(gw) == []
    if status != 200:
        assert_api_error(status, body, 400, "invalid_request_error")


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/messages?beta=true"), ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/messages/batches"), ("GET", "/v1/models"), ("PUT", "/v1/messages"),
    ("PATCH", "/v1/files/x"), ("DELETE", "/v1/messages/batches/b1"),
])
def test_any_method_and_path_under_v1_is_masked(gw, method, path):
    data = json.dumps(message("stop " + INSTANCE)).encode()
    status, _, body = raw_request(gw, method, path, [("Content-Type", "application/json"),
                                                     ("x-api-key", API_KEY)], data)
    assert status == 200, body
    assert len(gw["received"]) == 1 and leaks(gw) == []


ENCODED_ARN = ARN.replace(":", "%3A").replace("/", "%2F")
URL_ORIGINALS = [INSTANCE, ACCESS_KEY, ENCODED_ARN, "i%2D0123456789abcdef0"]


@pytest.mark.parametrize("path", [
    "/v1/messages?note=" + INSTANCE, "/v1/messages/batches/" + ACCESS_KEY,
    "/v1/messages?arn=" + ENCODED_ARN, "/v1/messages?id=i%2D0123456789abcdef0"])
def test_identifier_in_the_url_is_not_forwarded(gw, path):
    data = json.dumps(message("hi")).encode()
    status, _, body = raw_request(gw, "POST", path, [("Content-Type", "application/json"),
                                                     ("x-api-key", API_KEY)], data)
    assert_api_error(status, body, 400, "invalid_request_error")
    assert gw["received"] == []


def test_identifier_in_the_url_stays_out_of_the_error_log(gw):
    raw_request(gw, "POST", "/v1/messages?note=" + INSTANCE,
                [("Content-Type", "application/json"), ("x-api-key", API_KEY)], b"{}")
    base.log_lines(gw, "status=400")
    assert INSTANCE not in gw["log"].read_text()


def image(data):
    return with_content([{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": data}}])


def test_base64_data_is_no_hiding_place_for_text(gw):
    status, _, body = post(gw, image("iVBORw0KGgo " + INSTANCE + " " + ARN))
    assert_api_error(status, body, 400, "invalid_request_error")
    assert gw["received"] == []
    status, _, body = post(gw, image("iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"))
    assert status == 200, body


def test_access_key_id_inside_base64_data_is_not_forwarded(gw):
    post(gw, image("iVBORw0KGgo+" + ACCESS_KEY + "+AAAA"))
    assert leaks(gw, [ACCESS_KEY]) == []


def test_text_document_in_base64_is_masked_in_its_decoding(gw):
    text = "boot log of " + INSTANCE + " in " + VPC + "\n"
    status, _, body = post(gw, with_content([{"type": "document", "source": {
        "type": "base64", "media_type": "text/plain",
        "data": base64.b64encode(text.encode()).decode()}}]))
    assert status == 200, body
    forwarded = json.loads(gw["received"][0][2])["messages"][0]["content"][0]["source"]
    assert base64.b64decode(forwarded["data"]) == b"boot log of AWS_EC2_000001 in AWS_VPC_000001\n"


def test_megabytes_of_random_base64_pass_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "Upstream", AnyUpstream)
    monkeypatch.setattr(base, "MAX_BODY", 8 * 1024 * 1024)
    data = base64.b64encode(random.Random(3).randbytes(4 * 1024 * 1024)).decode()
    raw = json.dumps(image(data)).encode()
    with running_gateway(tmp_path, body_buffer=base.MAX_BODY,
                         max_body_bytes=base.MAX_BODY) as gateway:
        status, _, body = post(gateway, raw)
        assert status == 200, body
        assert gateway["received"][0][2] == raw


def test_chunked_body_without_length_is_masked(gw):
    status, body = base.post_chunked(gw, json.dumps(message("stop " + INSTANCE)).encode(), 3)
    assert status == 200, body
    assert len(gw["received"]) == 1 and leaks(gw) == []


def test_empty_body_passes_as_it_is(gw):
    status, _, body = raw_request(gw, "POST", "/v1/messages",
                                  [("Content-Type", "application/json"), ("x-api-key", API_KEY)],
                                  b"")
    assert status == 200, body
    assert gw["received"][0][2] == b""


# ---------------------------------------------------------------- tokens and scopes

def test_token_text_from_a_client_never_restores_another_scope_original(gw):
    status, _, _ = post(gw, message("stop " + INSTANCE))
    assert status == 200
    assert json.loads(gw["received"][0][2])["messages"][0]["content"] == "stop AWS_EC2_000001"

    # Scope B sends A's token and the upstream answers with it: B gets token text back, only.
    answer = {"type": "message", "role": "assistant", "content": [
        {"type": "text", "text": "stopped AWS_EC2_000001"}]}
    data = json.dumps(answer).encode()
    gw["upstream"].reply = (200, {"Content-Type": "application/json",
                                  "Content-Length": str(len(data))}, [data])
    status, _, body = post(gw, message("what is AWS_EC2_000001? " + VPC),
                           headers={"x-api-key": OTHER_KEY})
    assert status == 200, body
    sent = json.loads(gw["received"][1][2])["messages"][0]["content"]
    assert "AWS_EC2_000001" not in sent and VPC not in sent
    assert INSTANCE not in body.decode()
    assert json.loads(body)["content"][0]["text"] == "stopped AWS_EC2_000001"

    # A itself gets its original back only for tokens of the request at hand.
    status, _, body = post(gw, message("hello"))
    assert INSTANCE not in body.decode()


def test_history_resent_by_the_client_never_forwards_a_restored_original(gw):
    # Turn 1: the account is found from its context; the model names its token where no
    # context precedes it, and the client gets the original back there.
    account = "493827165012"
    first_turn = {"role": "user", "content": f"Tag everything in account {account} as prod."}
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "content": [
        {"type": "text", "text": "Done: the owning account is AWS_ACCOUNT_000001; tagged "
                                 "AWS_ACCOUNT_000001 resources."},
        {"type": "tool_use", "id": "toolu_1", "name": "tag",
         "input": {"target": "AWS_ACCOUNT_000001", "AWS_ACCOUNT_000001": ["prod"]}}]}
    data = json.dumps(answer).encode()
    gw["upstream"].reply = (200, {"Content-Type": "application/json",
                                  "Content-Length": str(len(data))}, [data])
    status, _, body = post(gw, with_content(first_turn["content"]))
    assert status == 200, body
    restored = json.loads(body)
    assert restored["content"][1]["input"] == {"target": account, account: ["prod"]}
    assert json.loads(gw["received"][0][2])["messages"][0]["content"] == (
        "Tag everything in account AWS_ACCOUNT_000001 as prod.")

    # Turn 2: the whole history again, the assistant turn holding the bare original.
    history = {"model": "claude-sonnet-4-5", "max_tokens": 64,
               "system": f"Reports go to the team of {account}.",
               "messages": [first_turn,
                            {"role": "assistant", "content": restored["content"]},
                            {"role": "user", "content": [
                                {"type": "tool_result", "tool_use_id": "toolu_1",
                                 "content": f"tagged 3 resources in {account}"},
                                {"type": "text", "text": "Now list its buckets."}]}]}
    status, _, body = post(gw, history)
    assert status == 200, body
    assert leaks(gw, [account]) == []
    sent = json.loads(gw["received"][1][2])
    assert sent["system"] == "Reports go to the team of AWS_ACCOUNT_000001."
    assert sent["messages"][1]["content"][0]["text"] == (
        "Done: the owning account is AWS_ACCOUNT_000001; tagged AWS_ACCOUNT_000001 resources.")
    assert sent["messages"][1]["content"][1]["input"] == {
        "target": "AWS_ACCOUNT_000001", "AWS_ACCOUNT_000001": ["prod"]}
    assert sent["messages"][2]["content"][0]["content"] == (
        "tagged 3 resources in AWS_ACCOUNT_000001")


@pytest.mark.parametrize("text", [
    "The CloudTrail accountId is 493827165012 per account 493827165012.",
    "Seen 493827165012 twice; account is 493827165012",
])
def test_original_found_by_its_context_is_masked_everywhere_in_a_message(gw, text):
    status, _, body = post(gw, with_content(text, system="Our account is 493827165012"))
    assert status == 200, body
    assert leaks(gw, ["493827165012"]) == []


def sse(*events, newline="\n"):
    out = ""
    for name, data in events:
        out += f"event: {name}{newline}data: {json.dumps(data)}{newline}{newline}"
    return out


def delta(index, kind, field, text):
    return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                    "delta": {"type": kind, field: text}})


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_sse_with_split_tokens_and_either_line_ending_is_restored(gw, newline):
    stream = sse(("message_start", {"type": "message_start", "message": {}}),
                 delta(0, "text_delta", "text", "stop AWS_EC"),
                 delta(0, "text_delta", "text", "2_0000"),
                 delta(0, "text_delta", "text", "01 now"),
                 delta(1, "input_json_delta", "partial_json", '{"id": "AWS_E'),
                 delta(1, "input_json_delta", "partial_json", 'C2_000001"}'),
                 newline=newline)
    stream += "event: message_stop" + newline + 'data: {"type": "message_stop"}'  # no blank line
    data = stream.encode()
    gw["upstream"].reply = (200, {"Content-Type": "text/event-stream"},
                            [data[i:i + 5] for i in range(0, len(data), 5)])
    status, _, body = post(gw, message("stop " + INSTANCE, stream=True))
    assert status == 200
    text = body.decode()
    assert "AWS_EC2_000001" not in text.replace("AWS_EC2_0000\n", "")
    texts, partial = "", ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("data: "):
            event = json.loads(line[6:])
            d = event.get("delta", {})
            texts += d.get("text", "")
            partial += d.get("partial_json", "")
    assert texts == "stop " + INSTANCE + " now"
    assert json.loads(partial) == {"id": INSTANCE}
    assert text.rstrip().endswith('"message_stop"}')


def test_json_response_content_length_matches_the_restored_body(gw):
    answer = json.dumps({"type": "message", "content": [
        {"type": "text", "text": "AWS_EC2_000001 " * 50}]}).encode()
    gw["upstream"].reply = (200, {"Content-Type": "application/json",
                                  "Content-Length": str(len(answer))}, [answer])
    status, headers, body = post(gw, message("stop " + INSTANCE))
    assert status == 200
    assert headers.get("Content-Length") in (None, str(len(body)))
    assert json.loads(body)["content"][0]["text"] == (INSTANCE + " ") * 50


def test_html_error_from_upstream_passes_without_breaking(gw):
    page = b"<html><body>502 Bad Gateway AWS_EC2_000001</body></html>"
    gw["upstream"].reply = (502, {"Content-Type": "text/html",
                                  "Content-Length": str(len(page))}, [page])
    status, headers, body = post(gw, message("stop " + INSTANCE))
    assert status == 502
    assert headers.get("Content-Length") in (None, str(len(body)))
    assert body.startswith(b"<html>")


def test_gzip_response_despite_cleared_accept_encoding_is_decoded_and_restored(gw):
    answer = gzip.compress(json.dumps({"content": [{"type": "text",
                                                    "text": "AWS_EC2_000001"}]}).encode())
    gw["upstream"].reply = (200, {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                  "Content-Length": str(len(answer))}, [answer])
    status, headers, body = post(gw, message("stop " + INSTANCE))
    assert status == 200
    assert headers.get("Content-Encoding") is None
    assert headers.get("Content-Length") in (None, str(len(body)))
    assert json.loads(body)["content"][0]["text"] == INSTANCE


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_brotli_response_is_refused_with_an_api_shaped_502(gw, stream):
    plain = sse(delta(0, "text_delta", "text", "AWS_EC2_000001")) if stream else json.dumps(
        {"content": [{"type": "text", "text": "AWS_EC2_000001"}]})
    answer = brotli.compress(plain.encode())
    ctype = "text/event-stream" if stream else "application/json"
    gw["upstream"].reply = (200, {"Content-Type": ctype, "Content-Encoding": "br",
                                  "Content-Length": str(len(answer))}, [answer])
    status, headers, body = post(gw, message("stop " + INSTANCE, stream=stream))
    assert_api_error(status, body, 502, "api_error")
    assert "br encoding, which the gateway cannot decode" in json.loads(body)["error"]["message"]
    assert headers["Content-Type"] == "application/json"
    assert headers.get("Content-Encoding") is None
    assert answer not in body


def test_upstream_reset_mid_stream_ends_the_response(gw):
    head = sse(delta(0, "text_delta", "text", "stop AWS_EC2_0")).encode()
    gw["upstream"].reply = (200, {"Content-Type": "text/event-stream"}, [head])
    status, _, _ = post(gw, message("stop " + INSTANCE, stream=True))
    assert status == 200  # the client sees the stream end; the gateway keeps serving
    assert post(gw, message("again " + INSTANCE))[0] == 200


def test_truncated_json_response_ends_and_the_gateway_keeps_serving(gw):
    head = b'{"type":"message","content":[{"type":"text","text":"AWS_EC2_000001'
    gw["upstream"].reply = (200, {"Content-Type": "application/json",
                                  "Content-Length": "4000"}, [head], "close")
    started = time.monotonic()
    with contextlib.suppress(http.client.HTTPException, OSError):
        post(gw, message("stop " + INSTANCE))
    assert time.monotonic() - started < 8
    gw["upstream"].reply = None
    assert post(gw, message("again " + INSTANCE))[0] == 200


def test_oversized_sse_event_is_passed_on_with_tokens_restored(gw):
    big = sse(delta(0, "text_delta", "text", "x" * (1100 * 1024) + " AWS_EC2_000001 end"))
    data = big.encode()
    gw["upstream"].reply = (200, {"Content-Type": "text/event-stream"},
                            [data[i:i + 65536] for i in range(0, len(data), 65536)])
    status, _, body = post(gw, message("stop " + INSTANCE, stream=True))
    assert status == 200
    event = json.loads(body.decode().split("data: ", 1)[1].split("\n", 1)[0])
    assert event["delta"]["text"].endswith(" " + INSTANCE + " end")


def test_thousands_of_identifiers_in_one_body_get_distinct_tokens(gw):
    ips = [f"10.{n // 250}.{n % 250}.7" for n in range(3000)]
    status, _, body = post(gw, message(" ".join(ips)))
    assert status == 200, body
    sent = json.loads(gw["received"][0][2])["messages"][0]["content"].split(" ")
    assert len(set(sent)) == 3000 and all(t.startswith("AWS_PRIVATE_IP_") for t in sent)
    assert leaks(gw, ips[:50]) == []


# ---------------------------------------------------------------- store faults

def test_exhausted_token_sequence_fails_closed(gw):
    store = store_client(gw)
    store.set(scope_prefix(API_KEY) + ":seq:EC2", 999999)
    status, _, body = post(gw, message("stop " + INSTANCE))
    assert_api_error(status, body, 503, "api_error")
    assert gw["received"] == []
    assert INSTANCE not in gw["log"].read_text()


def test_lost_sequence_never_hands_out_a_token_in_use(gw):
    assert post(gw, message("stop " + INSTANCE))[0] == 200
    store = store_client(gw)
    store.delete(scope_prefix(API_KEY) + ":seq:EC2")  # evicted (volatile-lru) or expired
    assert post(gw, message("stop i-0fedcba9876543210"))[0] == 200
    assert json.loads(gw["received"][1][2])["messages"][0]["content"] == "stop AWS_EC2_000002"
    assert store.get(scope_prefix(API_KEY) + ":t:AWS_EC2_000001").decode() == INSTANCE


def store_client(gw):
    return redis.Redis(port=gw["redis_port"], password=REDIS_PASSWORD, socket_timeout=5)


def assert_fails_closed_then_recovers(gw, recover):
    status, headers, body = post(gw, message("stop " + INSTANCE))
    assert_api_error(status, body, 503, "api_error")
    assert headers["Content-Type"] == "application/json"
    assert gw["received"] == []
    recover()
    status, _, body = post(gw, message("stop " + INSTANCE))
    assert status == 200, body
    assert leaks(gw) == []
    assert base.log_lines(gw, "store_error=")
    log = gw["log"].read_text()
    for secret in (INSTANCE, API_KEY, REDIS_PASSWORD):
        assert secret not in log


def test_store_paused_with_sigstop_fails_closed_and_recovers(gw):
    os.kill(gw["redis"].pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, _, body = post(gw, message("stop " + INSTANCE))
        assert time.monotonic() - started < 5
        assert_api_error(status, body, 503, "api_error")
        assert gw["received"] == []
    finally:
        os.kill(gw["redis"].pid, signal.SIGCONT)
    assert post(gw, message("stop " + INSTANCE))[0] == 200
    assert leaks(gw) == []


def test_store_restarted_fails_closed_and_recovers(gw, tmp_path):
    def restart():
        proc = subprocess.Popen(
            ["redis-server", "--port", str(gw["redis_port"]), "--bind", "127.0.0.1",
             "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        restarted.append(proc)
        wait_port(gw["redis_port"], proc, "redis-server")

    restarted = []
    assert post(gw, message("warm " + VPC))[0] == 200  # pooled connections exist
    gw["received"].clear()
    stop(gw["redis"])
    try:
        assert_fails_closed_then_recovers(gw, restart)
        # The pool held connections to the old server: a second request still works.
        assert post(gw, message("and " + INSTANCE))[0] == 200
    finally:
        for proc in restarted:
            stop(proc)


def test_store_out_of_memory_fails_closed_and_recovers(gw):
    store = store_client(gw)
    store.config_set("maxmemory-policy", "noeviction")
    store.config_set("maxmemory", "1")
    assert_fails_closed_then_recovers(gw, lambda: store.config_set("maxmemory", "0"))


def test_store_script_flushed_is_reloaded(gw):
    assert post(gw, message("stop " + INSTANCE))[0] == 200
    store_client(gw).script_flush()
    status, _, body = post(gw, message("stop " + INSTANCE + " " + VPC))
    assert status == 200, body
    assert leaks(gw) == []
    assert json.loads(gw["received"][1][2])["messages"][0]["content"].startswith(
        "stop AWS_EC2_000001 ")


def test_store_refusing_the_password_fails_closed(gw):
    store = store_client(gw)
    store.config_set("requirepass", "rotated-password")
    store = redis.Redis(port=gw["redis_port"], password="rotated-password", socket_timeout=5)
    store.client_kill_filter(_type="normal", skipme=True)  # pooled connections log in again

    def rotate_back():
        store.config_set("requirepass", REDIS_PASSWORD)

    assert_fails_closed_then_recovers(gw, rotate_back)


# ---------------------------------------------------------------- concurrency

def token_maps(store):
    token_to_original, original_to_tokens = {}, {}
    for key in store.scan_iter(match="aws_masker:*", count=1000):
        key = key.decode()
        if ":t:" in key:
            token_to_original[key] = store.get(key)
        elif ":o:" in key:
            original_to_tokens.setdefault(key, set()).add(store.get(key))
    return token_to_original, original_to_tokens


def scope_prefix(api_key):
    secret = b"a-test-scope-secret-of-32-chars!"  # running_gateway's scope_secret
    return "aws_masker:{" + hmac.new(secret, api_key.encode(), hashlib.sha1).hexdigest()[:20] + "}"


def test_concurrent_requests_over_two_workers_keep_tokens_one_to_one(gw):
    ids = [f"i-{n:017x}" for n in range(1, 31)] + [f"vpc-{n:08x}" for n in range(1, 11)]
    rng = random.Random(7)
    jobs = [(tuple(rng.sample(ids, 6)), API_KEY if k % 3 else OTHER_KEY) for k in range(200)]

    def send(job):
        picked, key = job
        return post(gw, message(" ".join(picked)), headers={"x-api-key": key})[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(send, jobs))
    assert statuses == [200] * len(jobs)
    assert leaks(gw, ids) == []

    # In the store: per scope, every original under one token and every token one original.
    tokens, originals = token_maps(store_client(gw))
    assert all(len(t) == 1 for t in originals.values())
    by_scope = collections.defaultdict(list)
    for key, original in tokens.items():
        by_scope[key.split(":t:")[0]].append(original)
    assert set(by_scope) == {scope_prefix(API_KEY), scope_prefix(OTHER_KEY)}
    for values in by_scope.values():
        assert len(values) == len(set(values))
    assert sum(len(v) for v in by_scope.values()) == len(originals)

    # Every forwarded body decodes, through its own scope's mappings, to what was sent.
    decoded = []
    for _, headers, body in gw["received"]:
        key = {k.lower(): v for k, v in headers.items()}["x-api-key"]
        prefix = scope_prefix(key)
        words = json.loads(body)["messages"][0]["content"].split(" ")
        decoded.append((tuple(tokens[f"{prefix}:t:{w}"].decode() for w in words), key))
    assert collections.Counter(decoded) == collections.Counter(jobs)


# ---------------------------------------------------------------- logs

def test_logs_never_hold_an_original_or_the_credential(gw):
    for body in [message("stop " + " ".join(ORIGINALS[:4])), HIDDEN["escaped_key_in_tool_input"],
                 b'{"model": "m", "messages": [' + INSTANCE.encode()]:
        post(gw, body)
    stop(gw["redis"])
    post(gw, message("stop " + INSTANCE))
    base.log_lines(gw, "status=503")
    log = gw["log"].read_text()
    for secret in [*ORIGINALS[:4], API_KEY]:
        assert secret not in log
