#!/usr/bin/python
# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: mapping_store_info
short_description: Counts the gateway's token mappings in Redis
version_added: 0.1.0
description:
  - Walks the masking gateway's keys (C(aws_masker:*)) with C(SCAN) and counts them in total, by
    scope and by token code, finds the keys without a TTL, and reads the server's memory figures.
  - Returns counts, scope ids (already hashes of client credentials) and token codes only; no
    original value and no token mapping ever leaves Redis through this module.
  - Read-only.
author:
  - AWS masking gateway maintainers (!UNKNOWN)
extends_documentation_fragment:
  - aws_masking.gateway.attributes
  - aws_masking.gateway.redis_connection
attributes:
  check_mode:
    support: full
    details: The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: It never changes anything.
options:
  scope:
    description:
      - Only count the keys of this scope (the hex id between the braces of
        C(aws_masker:{<scope>}:...)). Unset, every scope is counted.
    type: str
seealso:
  - module: aws_masking.gateway.mapping_store
"""

EXAMPLES = r"""
- name: The mapping store is counted
  aws_masking.gateway.mapping_store_info:
    password: "{{ redis_password }}"
  register: mappings

- name: No mapping key lives forever
  ansible.builtin.assert:
    that: mappings.totals.keys_without_ttl == 0
    fail_msg: >-
      {{ mappings.totals.keys_without_ttl }} mapping keys have no TTL; run the mappings
      playbook with mappings_action=expire.
"""

RETURN = r"""
totals:
  description: Counts over every key walked.
  returned: success
  type: dict
  contains:
    keys:
      description: Keys under C(aws_masker:).
      type: int
    originals:
      description: C(o:) keys (original to token).
      type: int
    tokens:
      description: C(t:) keys (token to original).
      type: int
    sequences:
      description: C(seq:) keys (last number issued per scope and code).
      type: int
    thinking_blocks:
      description: C(th:) keys (digests of thinking blocks the gateway delivered to the scope).
      type: int
    keys_without_ttl:
      description: Keys that never expire; the gateway gives every key a TTL, so any is a fault.
      type: int
    unrecognised:
      description: Keys under C(aws_masker:) that do not follow the layout.
      type: int
    scopes:
      description: Number of scopes.
      type: int
  sample:
    keys: 7
    originals: 3
    tokens: 3
    sequences: 1
    thinking_blocks: 0
    keys_without_ttl: 0
    unrecognised: 0
    scopes: 1
scopes:
  description: The same counts (without C(unrecognised) and C(scopes)) for each scope id.
  returned: success
  type: dict
  sample:
    3f2a9c0b1d4e5f607182:
      keys: 7
      originals: 3
      tokens: 3
      sequences: 1
      thinking_blocks: 0
      keys_without_ttl: 0
token_codes:
  description: Number of tokens of each token code, over the scopes walked.
  returned: success
  type: dict
  sample:
    EC2: 2
    IAM_ROLE_ARN: 1
memory:
  description: Figures from C(INFO memory), C(INFO stats) and C(INFO server).
  returned: success
  type: dict
  sample:
    used_memory: 1048576
    used_memory_human: 1.00M
    used_memory_peak_human: 1.20M
    maxmemory: 805306368
    maxmemory_human: 768.00M
    maxmemory_policy: volatile-lru
    evicted_keys: 0
    redis_version: 7.0.15
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.aws_masking.gateway.plugins.module_utils._mapping_store import (
    REDIS_IMPORT_ERROR,
    MappingStore,
    MappingStoreError,
    connection_argument_spec,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec["scope"] = {"type": "str"}
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    if REDIS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)

    try:
        store = MappingStore.connect(module.params)
        inventory = store.inventory(module.params["scope"])
        memory = store.memory()
    except MappingStoreError as exc:
        module.fail_json(msg=str(exc))

    module.exit_json(changed=False, memory=memory, **inventory)


if __name__ == "__main__":
    main()
