# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The verification report: checks of every host as a table, a document, JUnit XML, one line
per host. Used on the controller by the verify_report filters (plugins/filter/verify.py).

``results`` is always {host: [check, ...]} with checks in the shape of _checks.make_check.
"""

import textwrap
import xml.etree.ElementTree as ET

from ansible_collections.aws_masking.gateway.plugins.module_utils._checks import (
    counts,
    healthy,
)

STATUS_LABELS = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}
EVIDENCE_WIDTH = 64


def table(checks):
    """Lines of a fixed-width table: status, check, evidence (wrapped), then the guide section
    and the remedy under each failed or warned check."""
    name_width = max([len("check")] + [len(item["name"]) for item in checks])
    header = f"{'status':<6} {'check':<{name_width}} evidence"
    lines = [header, "-" * (len(header) + EVIDENCE_WIDTH - len("evidence"))]
    indent = " " * (7 + name_width + 1)
    for item in checks:
        wrapped = textwrap.wrap(item["evidence"], EVIDENCE_WIDTH, break_on_hyphens=False) or [""]
        lines.append(f"{STATUS_LABELS[item['status']]:<6} {item['name']:<{name_width}} "
                     f"{wrapped[0]}")
        lines += [indent + more for more in wrapped[1:]]
        if item["status"] in ("fail", "warn"):
            lines.append(f"{indent}guide: {item['section']}")
            if item["remedy"]:
                lines += [indent + ("remedy: " if i == 0 else "        ") + part for i, part in
                          enumerate(textwrap.wrap(item["remedy"], EVIDENCE_WIDTH - 8))]
    return lines


def summary_line(host, checks):
    """One line for a fleet run: verdict, counts, the failed checks by name."""
    tally = counts(checks)
    failed = [item["name"] for item in checks if item["status"] == "fail"]
    verdict = "HEALTHY" if healthy(checks) else "UNHEALTHY"
    line = (f"{host}: {verdict} pass={tally['pass']} fail={tally['fail']} "
            f"warn={tally['warn']} skip={tally['skip']}")
    return line + (f" failed: {', '.join(failed)}" if failed else "")


def summary_lines(results):
    return [summary_line(host, results[host]) for host in sorted(results)]


def document(results, generated_at=""):
    """The JSON report: per host its verdict, counts and checks; the overall verdict."""
    hosts = {
        host: {"healthy": healthy(checks), "counts": counts(checks), "checks": checks}
        for host, checks in sorted(results.items())
    }
    return {
        "generated_at": generated_at,
        "healthy": all(entry["healthy"] for entry in hosts.values()),
        "summary": summary_lines(results),
        "hosts": hosts,
    }


def junit(results, suite_name="aws_masking.gateway.verify"):
    """JUnit XML: one testsuite per host, one testcase per check. A failed check is a
    <failure>, a skipped one <skipped>; a warning passes with its evidence in <system-out>."""
    root = ET.Element("testsuites", name=suite_name)
    total = {"tests": 0, "failures": 0, "skipped": 0}
    for host in sorted(results):
        checks = results[host]
        tally = counts(checks)
        suite = ET.SubElement(root, "testsuite", name=host, tests=str(len(checks)),
                              failures=str(tally["fail"]), errors="0",
                              skipped=str(tally["skip"]))
        total["tests"] += len(checks)
        total["failures"] += tally["fail"]
        total["skipped"] += tally["skip"]
        for item in checks:
            case = ET.SubElement(suite, "testcase", name=item["name"], classname=host)
            if item["status"] == "fail":
                failure = ET.SubElement(case, "failure", message=item["evidence"],
                                        type=item["section"])
                failure.text = (f"{item['evidence']}\nGuide: {item['section']}\n"
                                f"Remedy: {item['remedy']}")
            elif item["status"] == "skip":
                ET.SubElement(case, "skipped", message=item["evidence"])
            else:
                out = ET.SubElement(case, "system-out")
                out.text = f"{item['status']}: {item['evidence']}"
                if item["status"] == "warn":
                    out.text += f"\nGuide: {item['section']}\nRemedy: {item['remedy']}"
    root.set("tests", str(total["tests"]))
    root.set("failures", str(total["failures"]))
    root.set("skipped", str(total["skipped"]))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
