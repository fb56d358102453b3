"""End-to-end fixtures: deploy the stack to this host with the local inventory, once.

The deploy runs through ansible-runner, as AWX runs playbooks, so tests read per-host stats
instead of scraping output. These tests change this host: they install packages and start
services under the supervisor, which is what the product does.
"""

import json
import subprocess
import time
import urllib.error
import urllib.request

import ansible_runner
import anthropic
import pytest

from tests.conftest import REPO

EDGE_URL = "http://127.0.0.1:8085"
STUB_URL = "http://127.0.0.1:8099"
HOST = "gateway-local"


def run_playbook(playbook, tmp_dir, extravars=None, cmdline=None):
    tmp_dir.mkdir(parents=True, exist_ok=True)
    result = ansible_runner.run(
        private_data_dir=str(tmp_dir),
        project_dir=str(REPO),
        playbook=str(REPO / "playbooks" / playbook),
        inventory=str(REPO / "inventories" / "local"),
        extravars=extravars or {},
        envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        cmdline=cmdline,
        quiet=True,
    )
    return result


def failed_tasks(result):
    return [
        f"{event['event_data'].get('task')}: {event['event_data'].get('res', {}).get('msg')}"
        for event in result.events
        if event.get("event") == "runner_on_failed"
    ]


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    first = run_playbook("deploy.yml", tmp_path_factory.mktemp("deploy-1"))
    assert first.rc == 0, f"deploy failed: {failed_tasks(first)}"
    return first


@pytest.fixture()
def stub(deployment):
    return StubUpstream(STUB_URL)


@pytest.fixture()
def client(deployment):
    return anthropic.Anthropic(base_url=EDGE_URL, api_key="sk-ant-e2e-test-key", max_retries=0)


class StubUpstream:
    """Reads what the stand-in upstream received, directly, not through the gateway."""

    def __init__(self, url):
        self.url = url

    def clear(self):
        request = urllib.request.Request(f"{self.url}/__stub/received", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()

    def received(self):
        with urllib.request.urlopen(f"{self.url}/__stub/received", timeout=10) as resp:
            return json.load(resp)


def supervisorctl(*args):
    return subprocess.run(["supervisorctl", *args], capture_output=True, text=True, check=False)


def wait_for(predicate, timeout=30.0, interval=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return None, ""
