"""Thinking blocks through the nginx_lua engine: a block the gateway delivered comes back.

The model only sees tokens, yet it may write identifiers of its own in its thinking (an example
CIDR, an AWS managed policy ARN). Clients must send the block back unchanged, so the gateway
records a digest of every thinking block it delivers and forwards such a block, byte for byte,
only to the scope it delivered it to. Each test runs its private redis, nginx and upstream.
"""

import gzip
import json
import subprocess
import time
import urllib.request

import pytest
import redis
import test_gateway_adversarial as adv
import test_gateway_nginx as base
from test_gateway_adversarial import ARN, INSTANCE, OTHER_KEY, REDIS_PASSWORD, scope_prefix
from test_gateway_nginx import API_KEY, post, running_gateway, stop, wait_port

CIDR = "10.0.0.0/16"
POLICY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
THOUGHT = ("The user wants a VPC; a usual choice is " + CIDR + " and the policy " + POLICY
           + ". Looking at AWS_EC2_000001 first — café 😀. ") * 60  # several 4 KiB pieces
SIGNATURE = "EqQBCkYIARgCIkCmZ+/xYz0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH=="


@pytest.fixture
def gw(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "Upstream", adv.AnyUpstream)
    with running_gateway(tmp_path) as gateway:
        yield gateway


def store(gw):
    return redis.Redis(port=gw["redis_port"], password=REDIS_PASSWORD, socket_timeout=5)


def recorded(gw, api_key=API_KEY, count=1, timeout=5.0):
    """The scope's recorded thinking digests, once there are count of them (timers write them
    right after the block has been sent)."""
    client = store(gw)
    deadline = time.monotonic() + timeout
    while True:
        keys = list(client.scan_iter(match=scope_prefix(api_key) + ":th:*"))
        if len(keys) >= count or time.monotonic() > deadline:
            return keys
        time.sleep(0.05)


def json_reply(gw, blocks, gzipped=False):
    data = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                       "content": blocks, "stop_reason": "tool_use"}).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    headers["Content-Length"] = str(len(data))
    gw["upstream"].reply = (200, headers, [data])


def sse_reply(gw, thought, signature, gzipped=False):
    events = [("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "thinking", "thinking": ""}})]
    events += [adv.delta(0, "thinking_delta", "thinking", thought[i:i + 37])
               for i in range(0, len(thought), 37)]
    events += [adv.delta(0, "signature_delta", "signature", signature),
               ("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("content_block_start", {"type": "content_block_start", "index": 1,
                                        "content_block": {"type": "text", "text": ""}}),
               adv.delta(1, "text_delta", "text", "Checking AWS_EC2_000001 now."),
               ("content_block_stop", {"type": "content_block_stop", "index": 1}),
               ("message_stop", {"type": "message_stop"})]
    data = adv.sse(*events).encode()
    headers = {"Content-Type": "text/event-stream"}
    if gzipped:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    gw["upstream"].reply = (200, headers, [data[i:i + 11] for i in range(0, len(data), 11)])


def blocks_of_stream(body):
    """The content blocks a client assembles from an event stream."""
    blocks = {}
    for line in body.decode().splitlines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if event["type"] == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif event["type"] == "content_block_delta":
            block, d = blocks[event["index"]], event["delta"]
            for field in ("thinking", "signature", "text"):
                if field + "_delta" == d["type"]:
                    block[field] = block.get(field, "") + d[field]
    return [blocks[i] for i in sorted(blocks)]


def first_turn(gw, streamed, thought=THOUGHT, signature=SIGNATURE, api_key=API_KEY,
               gzipped=False):
    """A first turn whose answer holds a thinking block; returns the blocks the client got."""
    if streamed:
        sse_reply(gw, thought, signature, gzipped)
    else:
        json_reply(gw, [{"type": "thinking", "thinking": thought, "signature": signature},
                        {"type": "text", "text": "Checking AWS_EC2_000001 now."}], gzipped)
    status, _, body = post(gw, base.message("stop " + INSTANCE, stream=streamed),
                           headers={"x-api-key": api_key})
    assert status == 200, body
    content = blocks_of_stream(body) if streamed else json.loads(body)["content"]
    assert content[0] == {"type": "thinking", "thinking": thought, "signature": signature}
    assert content[1]["text"] == "Checking " + INSTANCE + " now."
    gw["upstream"].reply = None
    return content


def next_turn(thinking_block, api_key=API_KEY):
    """The request a client sends next: the history with the assistant turn as it got it."""
    return json.dumps({"model": "m", "max_tokens": 64, "messages": [
        {"role": "user", "content": "stop " + INSTANCE},
        {"role": "assistant", "content": [thinking_block,
                                          {"type": "text", "text": "Checking " + INSTANCE}]},
        {"role": "user", "content": "go on"}]}, ensure_ascii=False).encode(), api_key


def send(gw, turn):
    body, api_key = turn
    return post(gw, body, headers={"x-api-key": api_key})


def assert_refused_as_unknown(gw, turn):
    received = len(gw["received"])
    status, _, reply = send(gw, turn)
    adv.assert_api_error(status, reply, 400, "invalid_request_error")
    message = json.loads(reply)["error"]["message"]
    assert "unknown to the gateway" in message and "leave that block out" in message
    assert len(gw["received"]) == received


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_thinking_block_the_gateway_delivered_is_forwarded_byte_for_byte(gw, streamed, gzipped):
    # An answer compressed in spite of the cleared Accept-Encoding is recorded as it was decoded.
    block = first_turn(gw, streamed, gzipped=gzipped)[0]
    assert len(recorded(gw)) == 1
    turn = next_turn(block)
    status, _, reply = send(gw, turn)
    assert status == 200, reply
    forwarded = gw["received"][-1][2]
    sent_block = json.dumps(block, ensure_ascii=False).encode()
    assert sent_block in turn[0] and sent_block in forwarded  # byte for byte
    assert json.loads(forwarded)["messages"][1]["content"][1]["text"] == "Checking AWS_EC2_000001"
    assert adv.leaks(gw, [INSTANCE]) == []
    # The record slides with use, as mappings do.
    key = recorded(gw)[0]
    assert 3500 < store(gw).ttl(key) <= 3600


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_altered_or_forged_thinking_block_is_refused(gw, streamed):
    first_turn(gw, streamed)
    other = first_turn(gw, streamed, thought="Nothing to see.", signature="c2lnLW90aGVy")[0]
    assert len(recorded(gw, count=2)) == 2
    for block in (
            # The text of one block with the signature of another.
            {"type": "thinking", "thinking": THOUGHT, "signature": other["signature"]},
            # The genuine signature on text that was changed.
            {"type": "thinking", "thinking": THOUGHT + " " + ARN, "signature": SIGNATURE},
            {"type": "thinking", "thinking": THOUGHT.replace(CIDR, "10.9.0.0/16"),
             "signature": SIGNATURE},
            # A block the gateway never delivered.
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p " + CIDR}):
        assert_refused_as_unknown(gw, next_turn(block))
    # An identifier beside the genuine text and signature: refused as well.
    status, _, reply = send(gw, next_turn({"type": "thinking", "thinking": THOUGHT,
                                           "signature": SIGNATURE, "note": INSTANCE}))
    adv.assert_api_error(status, reply, 400, "invalid_request_error")
    assert adv.leaks(gw, [CIDR, POLICY, "10.9.0.0/16"]) == []


def test_thinking_block_delivered_to_another_scope_is_refused(gw):
    block = first_turn(gw, streamed=False, api_key=OTHER_KEY)[0]
    assert len(recorded(gw, api_key=OTHER_KEY)) == 1
    assert_refused_as_unknown(gw, next_turn(block, api_key=API_KEY))
    assert send(gw, next_turn(block, api_key=OTHER_KEY))[0] == 200


def test_store_down_while_recording_leaves_the_response_whole(gw, tmp_path):
    json_reply(gw, [{"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE},
                    {"type": "text", "text": "plain"}])
    stop(gw["redis"])
    restarted = None
    try:
        # No identifier in the request: it needs no store, its response is recorded after.
        status, headers, body = post(gw, base.message("hello"))
        assert status == 200, body
        assert json.loads(body)["content"][0] == {"type": "thinking", "thinking": THOUGHT,
                                                  "signature": SIGNATURE}
        assert headers.get("Content-Length") in (None, str(len(body)))
        assert base.log_lines(gw, "event=thinking_record blocks=1 error=")
        restarted = subprocess.Popen(
            ["redis-server", "--port", str(gw["redis_port"]), "--bind", "127.0.0.1",
             "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(gw["redis_port"], restarted, "redis-server")
        gw["upstream"].reply = None
        # The block was never recorded: sent back, it is refused with a way to go on.
        assert_refused_as_unknown(gw, next_turn({"type": "thinking", "thinking": THOUGHT,
                                                 "signature": SIGNATURE}))
        url = gw["url"] + "/aws-masker/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert json.loads(response.read())["thinking_unrecorded"] == 1
    finally:
        if restarted is not None:
            stop(restarted)


def test_a_turn_with_a_delivered_block_takes_at_most_two_store_round_trips(gw):
    block = first_turn(gw, streamed=True)[0]
    assert len(recorded(gw)) == 1
    client = store(gw)
    with client.monitor() as monitor:
        client.ping()  # MONITOR is on once it sees this
        while monitor.next_command()["command"] != "PING":
            pass
        status, _, reply = send(gw, next_turn(block))  # the answer holds no thinking block
        assert status == 200, reply
        time.sleep(0.3)  # anything written after the response would be seen too
        client.echo("end of turn")
        sent = []
        while (command := monitor.next_command())["command"] != "ECHO end of turn":
            if command["client_type"] != "lua":  # commands a script runs are no round trip
                sent.append(command["command"].split()[0].lower())
    assert len(sent) <= 2, sent
    assert sent[-1] == "evalsha", sent
