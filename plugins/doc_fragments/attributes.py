# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the attributes every module of the collection declares mean; modules give the support."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description:
      - Runs under C(--check), predicting C(changed) without touching the target.
  diff_mode:
    description:
      - Returns what changed, or would change in check mode, under C(--diff).
  idempotent:
    description:
      - A second run with the same arguments reports no change and changes nothing.
"""
