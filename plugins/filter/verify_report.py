# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters that render the verification report of the verify and health playbooks."""

from ansible_collections.aws_masking.gateway.plugins.module_utils import _report


class FilterModule:
    """verify_table (one host's checks -> table lines), verify_summary ({host: checks} -> one
    line per host), verify_document (-> the JSON report), verify_junit (-> JUnit XML)."""

    def filters(self):
        return {
            "verify_table": _report.table,
            "verify_summary": _report.summary_lines,
            "verify_document": _report.document,
            "verify_junit": _report.junit,
        }
