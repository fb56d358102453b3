"""The main job end to end: deploy to this host, mask a real request, restore the answer.

Real Redis and real nginx with its Lua module, deployed by the playbook; the stand-in upstream
is the only fake, and it is read directly to see what would have left the company.
"""

import contextlib
import json
import subprocess
import sys

import anthropic
import pytest

from tests.conftest import REPO, corpus_dir
from tests.e2e.conftest import (
    EDGE_URL,
    HOST,
    http_get,
    run_playbook,
    supervisorctl,
    wait_for,
)

MODEL = "claude-sonnet-4-5"


def text_files(kind):
    return sorted(p for p in (corpus_dir() / kind).iterdir()
                  if not p.name.endswith(".expect.json"))


def expectation(path):
    return json.loads(path.with_name(path.name + ".expect.json").read_text())


def last_user_text(record):
    body = json.loads(record["body"])
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def send(client, text, stream):
    request = {"model": MODEL, "max_tokens": 4096,
               "messages": [{"role": "user", "content": text}]}
    if not stream:
        return client.messages.create(**request).content[0].text
    with client.messages.stream(**request) as events:
        return "".join(events.text_stream)


def test_second_deploy_changes_nothing(deployment, tmp_path):
    second = run_playbook("deploy.yml", tmp_path)

    assert second.rc == 0
    assert second.stats["changed"].get(HOST, 0) == 0, second.stats


def test_edge_health_answers(deployment):
    status, body = http_get(f"{EDGE_URL}/health")

    assert status == 200
    assert json.loads(body)["status"] == "healthy"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_describe_instances_is_masked_upstream_and_restored(client, stub, stream):
    path = corpus_dir() / "real" / "ec2_describe_instances.txt"
    text = path.read_text(encoding="utf-8")
    stub.clear()

    reply = send(client, text, stream)

    received = stub.received()
    assert len(received) == 1
    seen = last_user_text(received[0])
    leaked = [item["value"] for item in expectation(path)["must_mask"] if item["value"] in seen]
    assert leaked == []
    assert "AWS_EC2_" in seen
    assert reply == text


@pytest.mark.parametrize(("encoding", "stream"), [("gzip", False), ("deflate", True)],
                         ids=["gzip_json", "deflate_sse"])
def test_answer_the_upstream_compressed_anyway_is_restored(client, stub, encoding, stream):
    text = "Stop i-0a1b2c3d4e5f67890 in vpc-a01106c2 for account 123456789012."
    stub.clear()
    steered = client.with_options(default_headers={"x-stub-content-encoding": encoding,
                                                   "x-stub-chunk-size": "11"})

    reply = send(steered, text, stream)

    assert "AWS_EC2_" in last_user_text(stub.received()[-1])
    assert reply == text


@pytest.mark.parametrize("path", text_files("real") + text_files("negative"),
                         ids=lambda p: p.name)
def test_corpus_file_through_gateway(client, stub, path, tmp_path):
    text = path.read_text(encoding="utf-8")
    stub.clear()

    reply = send(client, text, stream=False)

    seen = last_user_text(stub.received()[-1])
    kind = path.parent.name
    masked = tmp_path / "masked" / kind / path.name
    masked.parent.mkdir(parents=True)
    masked.write_text(seen, encoding="utf-8")
    score = subprocess.run(
        [sys.executable, str(corpus_dir() / "tools" / "check_corpus.py"), "score",
         str(corpus_dir()), str(tmp_path / "masked")],
        capture_output=True, text=True, check=False)
    expected = expectation(path)
    leaked = [item["value"] for item in expected["must_mask"] if item["value"] in seen]
    damaged = [item["value"] for item in expected["must_keep"]
               if seen.count(item["value"]) < item.get("min_count", 1)]
    assert leaked == [], score.stdout[-2000:]
    assert damaged == [], score.stdout[-2000:]
    if kind == "negative":
        assert seen == text
    assert reply == text


def test_same_original_gets_same_token_on_later_requests(client, stub):
    text = "compare i-0fedcba9876543210 with subnet-0a1b2c3d4e5f67890 and 10.20.30.40"
    stub.clear()

    send(client, text, stream=False)
    send(client, "again: " + text, stream=True)

    first, second = (last_user_text(record) for record in stub.received())
    assert "i-0fedcba9876543210" not in first + second
    assert second == "again: " + first


@contextlib.contextmanager
def program_stopped(name):
    """The supervisor program is stopped for the block, and started again whatever happens."""
    stopped = supervisorctl("stop", name)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    try:
        yield
    finally:
        supervisorctl("start", name)


def refused(client, text):
    with pytest.raises(anthropic.APIStatusError) as caught:
        send(client, text, stream=False)
    return caught.value.status_code, caught.value.response.json()


def test_redis_down_fails_closed_and_recovers(client, stub):
    stub.clear()
    with program_stopped("aws-masking-redis"):
        status, body = refused(client, "instance i-0123456789abcdef0 in vpc-0a1b2c3d")

        assert status == 503
        assert body["type"] == "error"
        assert body["error"]["type"] == "api_error"
        assert "i-0123456789abcdef0" not in json.dumps(body)
        assert stub.received() == []
        deep_status, deep = http_get(f"{EDGE_URL}/health/deep")
        assert deep_status == 503
        assert json.loads(deep)["store"] == "unreachable"

    def serves_again():
        try:
            return send(client, "vpc-0a1b2c3d", stream=False) == "vpc-0a1b2c3d"
        except anthropic.APIStatusError:
            return False

    assert wait_for(serves_again, timeout=30)


def test_unreachable_upstream_gets_an_api_shaped_502(client, stub):
    with program_stopped("aws-masking-mock-upstream"):
        status, body = refused(client, "instance i-0123456789abcdef0")

        assert status == 502
        assert body["type"] == "error"
        assert body["error"]["type"] == "api_error"
    assert wait_for(lambda: http_get(f"{stub.url}/health")[0] == 200, timeout=30)


def test_gateway_down_gets_an_api_shaped_502_from_the_edge(client, stub):
    stub.clear()
    with program_stopped("aws-masking-gateway"):
        status, body = refused(client, "instance i-0123456789abcdef0")

        assert status == 502
        assert body["error"]["type"] == "api_error"
        assert stub.received() == []
    assert wait_for(lambda: http_get(f"{EDGE_URL}/health/deep")[0] == 200, timeout=30)


def test_readme_demo_runs(deployment):
    demo = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")],
                          capture_output=True, text=True, check=False, timeout=120)

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "identifiers that reached the upstream: 0 of" in demo.stdout
