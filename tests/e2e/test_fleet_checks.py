"""The testinfra checks of tests/infra run outside Molecule against an inventory, as on a fleet.

pytest runs them in a subprocess against this host through an inventory, and its JUnit report
is read for the counts: with every group on the host each check runs; with the host in the edge
group only, the checks of the other groups' services are skipped and the edge's still pass.
"""

import os
import subprocess
import sys
from xml.etree import ElementTree

import yaml

from tests.conftest import REPO

LOCAL = REPO / "inventories" / "local"


def edge_only_inventory(tmp_path):
    hosts = yaml.safe_load((LOCAL / "hosts.yml").read_text())["all"]["hosts"]
    path = tmp_path / "edge-only.yml"
    path.write_text(yaml.safe_dump({"edge": {"hosts": hosts}}))
    return path


def infra_checks(inventory, hosts, tmp_path):
    """pytest tests/infra against the inventory; returns its exit code, {test: outcome}, output."""
    report = tmp_path / "infra.xml"
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "tests" / "infra"), f"--hosts={hosts}",
         f"--ansible-inventory={inventory}", "-p", "no:cacheprovider", "-q",
         f"--junitxml={report}"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        found = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = found[0] if found else "passed"
    return result.returncode, outcomes, result.stdout[-3000:]


def test_every_check_passes_on_the_host_of_every_group(deployment, tmp_path):
    returncode, outcomes, output = infra_checks(LOCAL, "ansible://all", tmp_path)

    assert returncode == 0, output
    assert len(outcomes) >= 10, outcomes
    assert set(outcomes.values()) == {"passed"}, outcomes


def test_a_host_of_the_edge_group_only_gets_the_edge_checks(deployment, tmp_path):
    returncode, outcomes, output = infra_checks(edge_only_inventory(tmp_path), "ansible://edge",
                                                tmp_path)

    assert returncode == 0, output
    ran = {name for name, outcome in outcomes.items() if outcome == "passed"}
    skipped = {name for name, outcome in outcomes.items() if outcome == "skipped"}
    assert ran == {name for name in outcomes if "edge" in name}, outcomes
    assert ran and skipped
    assert ran | skipped == set(outcomes)
