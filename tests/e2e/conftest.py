"""End-to-end fixtures: deploy the stack to this host with the local inventory, once.

The session's deploy is the collection as users get it: built into a tarball, installed from it
into an empty collections path, and its deploy playbook run by its FQCN from there. Playbooks
run through ansible-runner, as AWX runs them, so tests read per-host stats and events instead
of scraping output. These tests change this host: they install packages and start services
under the supervisor, which is what the product does.
"""

import json
import subprocess
import time
import urllib.error
import urllib.request

import ansible_runner
import anthropic
import pytest

from tests.conftest import REPO, install_from_tarball

EDGE_URL = "http://127.0.0.1:8085"
STUB_URL = "http://127.0.0.1:8099"
HOST = "gateway-local"
FQCN_DEPLOY = "aws_masking.gateway.deploy"


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
def installed_collection(tmp_path_factory):
    """The collections path the collection's tarball was installed into; nothing else is in it."""
    collections = tmp_path_factory.mktemp("collections")
    install_from_tarball(tmp_path_factory.mktemp("build"), collections)
    return collections


def run_installed(playbook, tmp_dir, collections):
    """Runs a playbook of the installed collection by its FQCN, outside the clone."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return ansible_runner.run(
        private_data_dir=str(tmp_dir),
        project_dir=str(tmp_dir),
        playbook=playbook,
        inventory=str(REPO / "inventories" / "local"),
        envvars={"ANSIBLE_COLLECTIONS_PATH": str(collections),
                 "ANSIBLE_CONFIG": str(tmp_dir / "no-ansible.cfg")},
        quiet=True,
    )


def task_paths(result):
    """The files of the tasks that ran, without their line numbers."""
    return {event["event_data"]["task_path"].rsplit(":", 1)[0] for event in result.events
            if event.get("event_data", {}).get("task_path")}


@pytest.fixture(scope="session")
def deployment(tmp_path_factory, installed_collection):
    first = run_installed(FQCN_DEPLOY, tmp_path_factory.mktemp("deploy-1"), installed_collection)
    assert first.rc == 0, f"deploy failed: {failed_tasks(first)}"
    assert first.stats["failures"].get(HOST, 0) == 0
    assert first.stats["ok"].get(HOST, 0) > 0
    # Every task came from the installed copy: none from the clone through its symlink.
    installed = installed_collection / "ansible_collections" / "aws_masking" / "gateway"
    outside = {path for path in task_paths(first) if not path.startswith(f"{installed}/")}
    assert task_paths(first)
    assert outside == set()
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
