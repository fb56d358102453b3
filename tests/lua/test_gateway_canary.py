"""The masking canary in a real nginx: answered by the gateway, never proxied.

Uses test_gateway_nginx's running_gateway (private Redis, nginx with the adapter, a recording
upstream) and the canary code of the masking_canary module, so both ends are the real ones.
"""

import base64
import json

import pytest

from tests.conftest import collection_module_utils
from tests.lua.test_gateway_nginx import message, post, running_gateway

canary = collection_module_utils("_canary")

SECRET = "a-canary-secret-for-the-tests-0123"


@pytest.fixture
def gateway(tmp_path):
    with running_gateway(tmp_path, canary_secret=SECRET) as gw:
        yield gw


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_canary_is_masked_answered_restored_and_never_proxied(gateway, stream):
    result = canary.run(gateway["url"], SECRET, stream=stream)

    assert result["status"] == "pass", result
    assert result["name"] == ("canary_sse" if stream else "canary_json")
    assert gateway["received"] == []
    for original in canary.ORIGINALS:
        assert original not in json.dumps(result)


def test_canary_answer_carries_the_masked_body_and_restored_text(gateway):
    status, headers, body = post(gateway, message(canary.TEXT),
                                 headers={canary.HEADER: SECRET})

    assert status == 200
    upstream_body = base64.b64decode(headers[canary.BODY_HEADER]).decode()
    assert [o for o in canary.ORIGINALS if o in upstream_body] == []
    assert len(set(canary.TOKEN_RE.findall(upstream_body))) == len(canary.ORIGINALS)
    assert json.loads(body)["content"][0]["text"] == canary.TEXT
    assert gateway["received"] == []


def test_canary_tokens_live_in_their_own_scope(gateway):
    post(gateway, message(canary.TEXT), headers={canary.HEADER: SECRET})
    status, _, _ = post(gateway, message("only " + canary.ORIGINALS[1]))

    assert status == 200
    _, _, forwarded = gateway["received"][0]
    # The client's scope starts its own numbering: the canary's VPC token was not reused.
    assert json.loads(forwarded)["messages"][-1]["content"] == "only AWS_VPC_000001"
    _, sent_headers, _ = gateway["received"][0]
    assert canary.HEADER not in {name.lower() for name in sent_headers}


@pytest.mark.parametrize("secret", ["wrong-secret", "", SECRET + "x"])
def test_wrong_canary_secret_is_refused_and_nothing_forwarded(gateway, secret):
    status, headers, body = post(gateway, message(canary.TEXT), headers={canary.HEADER: secret})

    assert status == 403
    assert json.loads(body)["error"]["type"] == "permission_error"
    assert canary.BODY_HEADER not in headers
    assert gateway["received"] == []
    result = canary.run(gateway["url"], secret)
    assert result["status"] == "fail"
    assert result["section"] == "1. Service Startup Issues / Container Keeps Restarting / " \
        "Configuration Errors"


def test_gateway_without_a_canary_secret_refuses_every_canary(tmp_path):
    with running_gateway(tmp_path) as gw:
        status, _, _ = post(gw, message(canary.TEXT), headers={canary.HEADER: SECRET})

        assert status == 403
        assert gw["received"] == []


def test_canary_fails_when_the_store_is_down(gateway):
    gateway["redis"].terminate()
    gateway["redis"].wait()

    result = canary.run(gateway["url"], SECRET)

    assert result["status"] == "fail"
    assert result["section"] == "4. Redis Issues / Redis Connection Refused"
    assert gateway["received"] == []
