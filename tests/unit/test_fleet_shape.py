"""The fleet shape of deploy.yml and restart.yml: tiers roll in batches and stop at a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _plays(name):
    return yaml.safe_load((REPO / "playbooks" / name).read_text(encoding="utf-8"))


def _play(plays, hosts, words):
    return next(play for play in plays if play.get("hosts") == hosts and words in play["name"])


@pytest.mark.parametrize(("hosts", "words"), [("gateway", "gateway runs"), ("edge", "edge runs")])
def test_deploy_rolls_each_tier_and_gates_every_batch(hosts, words):
    play = _play(_plays("deploy.yml"), hosts, words)

    assert play["serial"] == "{{ deploy_serial | default(1) }}"
    assert play["max_fail_percentage"] == 0
    gate = play["tasks"][-1]
    assert gate["ansible.builtin.include_tasks"] == "tasks/verify_batch.yml"
    # Only the tier just deployed is checked: the other tiers of the host may not be there yet.
    assert {key: value for key, value in gate["vars"].items() if value is False}
    assert all(key.startswith("checks_in_") or key == "checks_mock_upstream"
               for key in gate["vars"])


def test_the_batch_gate_fails_on_a_failed_check():
    tasks = yaml.safe_load((REPO / "playbooks" / "tasks" / "verify_batch.yml").read_text())

    assert tasks[0]["vars"] == {"checks_level": "quick"}
    assert tasks[1]["ansible.builtin.assert"]["that"] == "checks_failed | length == 0"
    assert "selectattr('status', 'equalto', 'fail')" in tasks[1]["vars"]["checks_failed"]


def test_restart_goes_one_host_at_a_time():
    plays = [play for play in _plays("restart.yml") if "restarted" in play["name"]]

    assert len(plays) == 4
    assert all(play["serial"] == 1 and play["max_fail_percentage"] == 0 for play in plays)


def test_production_gateways_share_the_one_redis():
    inventory = yaml.safe_load((REPO / "inventories/production/hosts.yml").read_text())
    group_vars = yaml.safe_load((REPO / "inventories/production/group_vars/all.yml").read_text())
    groups = inventory["all"]["children"]

    assert list(groups["redis"]["hosts"]) == ["redis-prod-1"]
    assert len(groups["gateway"]["hosts"]) >= 2
    assert group_vars["aws_masking_runtime"] == "docker"
    assert group_vars["gateway_redis_host"] == "{{ hostvars[groups['redis'][0]]['ansible_host'] }}"


def test_no_playbook_stops_for_the_docker_runtime():
    texts = [path.read_text(encoding="utf-8") for path in (REPO / "playbooks").rglob("*.yml")]

    assert not [text for text in texts if "issue 5" in text]
