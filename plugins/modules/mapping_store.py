#!/usr/bin/python
# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: mapping_store
short_description: Expires, flushes, backs up and restores the gateway's token mappings in Redis
version_added: 0.1.0
description:
  - Operates on the masking gateway's keys in Redis (C(aws_masker:*), see the collection's
    C(docs/ARCHITECTURE.md), "Mapping store"). Keys are walked with C(SCAN), never C(KEYS).
  - O(action=expire) gives every key without a TTL one of O(ttl) seconds.
  - O(action=flush) deletes the keys of one O(scope), or every gateway key. Clients of a flushed
    scope get new tokens, and tokens issued before the flush can no longer be restored in
    answers. The module does not ask for confirmation; the C(mappings) playbook does, and takes a
    backup first.
  - O(action=backup) writes the keys to O(dest), one JSON object per line with C(key), C(type),
    C(value) and C(pttl) (the remaining TTL in milliseconds, C(null) for none).
  - O(action=restore) writes back the keys of a backup in O(src) that are missing, with the TTL
    they had left when the backup was taken. A live key with another value is never
    overwritten, it is counted in RV(conflicts) instead. An original-to-token key is only
    restored when its token maps back to the same original, so a restore cannot pair an original
    with a token that now stands for something else. A sequence is raised to the backup's
    number, never lowered.
  - Module results carry counts, scope ids (already hashes) and token codes only, never an
    original value or a mapping.
notes:
  - A backup file holds the original AWS identifiers the gateway masked. It is created with mode
    C(0600) and replaces O(dest) only once complete; keep it and its copies like a secret and
    delete them when no longer needed.
  - A backup is not a point-in-time snapshot. The gateway keeps writing while the keys are walked,
    so a key created or refreshed during the walk may or may not be in the file.
  - O(action=flush) deletes the keys its walk finds. A key the gateway writes while the walk runs
    may survive it; stop the gateway first to be sure every mapping is gone.
  - O(scope) and O(ttl) do not apply to O(action=restore), which restores every key in O(src).
author:
  - AWS masking gateway maintainers (!UNKNOWN)
extends_documentation_fragment:
  - aws_masking.gateway.attributes
  - aws_masking.gateway.redis_connection
attributes:
  check_mode:
    support: full
    details:
      - Walks the keys and reports exactly what would change, without writing to Redis or
        to disk.
      - O(action=backup) always reports a change, as it always writes a new file.
  diff_mode:
    support: partial
    details:
      - O(action=expire), O(action=flush) and O(action=restore) show key counts before and
        after. Values are never shown.
  idempotent:
    support: partial
    details:
      - O(action=expire), O(action=flush) and O(action=restore) change nothing on a second run.
      - O(action=backup) writes a new file on every run.
options:
  action:
    description:
      - What to do with the mapping keys.
    type: str
    required: true
    choices: [expire, flush, backup, restore]
  scope:
    description:
      - Limit O(action=expire), O(action=flush) and O(action=backup) to the keys of this scope
        (the lower-case hex id between the braces of C(aws_masker:{<scope>}:...)).
      - Unset, every key under C(aws_masker:) is concerned.
    type: str
  ttl:
    description:
      - Seconds of life O(action=expire) gives each key that has none. Match the gateway's
        C(gateway_mapping_ttl_seconds).
    type: int
    default: 86400
  dest:
    description:
      - File O(action=backup) writes. Its directory must exist. An existing file is replaced.
      - Required with O(action=backup).
    type: path
  src:
    description:
      - Backup file O(action=restore) reads, as written by O(action=backup).
      - Required with O(action=restore).
    type: path
seealso:
  - module: aws_masking.gateway.mapping_store_info
"""

EXAMPLES = r"""
- name: Every mapping key has a TTL
  aws_masking.gateway.mapping_store:
    action: expire
    ttl: 86400
    password: "{{ redis_password }}"

- name: The mappings are saved
  aws_masking.gateway.mapping_store:
    action: backup
    dest: /var/backups/aws-masking-gateway/mappings-20260101T000000Z.jsonl
    password: "{{ redis_password }}"

- name: One client's mappings are gone
  aws_masking.gateway.mapping_store:
    action: flush
    scope: 3f2a9c0b1d4e5f607182
    password: "{{ redis_password }}"

- name: The saved mappings are back
  aws_masking.gateway.mapping_store:
    action: restore
    src: /var/backups/aws-masking-gateway/mappings-20260101T000000Z.jsonl
    password: "{{ redis_password }}"
  register: restore

- name: The restore met no conflicting key
  ansible.builtin.assert:
    that: restore.conflicts == 0
"""

RETURN = r"""
keys_expired:
  description: Keys given a TTL (that would be, in check mode).
  returned: action is C(expire)
  type: int
  sample: 3
keys:
  description:
    - With O(action=expire), the keys walked.
    - With O(action=backup), the keys written to the file.
  returned: action is C(expire) or C(backup)
  type: int
  sample: 1204
keys_deleted:
  description: Keys deleted (that would be, in check mode).
  returned: action is C(flush)
  type: int
  sample: 1204
scopes:
  description: Number of scopes among the keys flushed or written.
  returned: action is C(flush) or C(backup)
  type: int
  sample: 12
path:
  description: The backup file.
  returned: action is C(backup)
  type: str
  sample: /var/backups/aws-masking-gateway/mappings-20260101T000000Z.jsonl
skipped_keys:
  description: Keys under C(aws_masker:) that are not strings, left out of the backup.
  returned: action is C(backup)
  type: int
  sample: 0
records:
  description: Keys in the backup file.
  returned: action is C(restore)
  type: int
  sample: 1204
keys_restored:
  description: Missing keys written back (that would be, in check mode).
  returned: action is C(restore)
  type: int
  sample: 1204
keys_present:
  description: Keys already live with the backup's value, or sequences already at or past it.
  returned: action is C(restore)
  type: int
  sample: 0
sequences_raised:
  description: Live sequences raised to the backup's number.
  returned: action is C(restore)
  type: int
  sample: 0
conflicts:
  description:
    - Keys left alone because the live key holds another value, or because the token an
      original-to-token key names now maps another original.
  returned: action is C(restore)
  type: int
  sample: 0
conflict_scopes:
  description: Scope ids with at least one conflict.
  returned: action is C(restore)
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.aws_masking.gateway.plugins.module_utils._mapping_store import (
    REDIS_IMPORT_ERROR,
    MappingStore,
    MappingStoreError,
    connection_argument_spec,
)


def run(module, store):
    params = module.params
    action = params["action"]
    check_mode = module.check_mode

    if action == "expire":
        result = store.expire(params["ttl"], params["scope"], check_mode)
        return result, result["keys_expired"] > 0
    if action == "flush":
        result = store.flush(params["scope"], check_mode)
        return result, result["keys_deleted"] > 0
    if action == "backup":
        return store.backup(params["dest"], params["scope"], check_mode), True

    before = None
    if module._diff:
        before = store.inventory()["totals"]["keys"]
    result = store.restore(params["src"], check_mode)
    if before is not None:
        result["before"] = {"keys": before}
        result["after"] = {"keys": before + result["keys_restored"]}
    return result, result["keys_restored"] + result["sequences_raised"] > 0


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        action={"type": "str", "required": True,
                "choices": ["expire", "flush", "backup", "restore"]},
        scope={"type": "str"},
        ttl={"type": "int", "default": 86400},
        dest={"type": "path"},
        src={"type": "path"},
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("action", "backup", ["dest"]), ("action", "restore", ["src"])],
    )

    if REDIS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)

    try:
        store = MappingStore.connect(module.params)
        result, changed = run(module, store)
    except MappingStoreError as exc:
        module.fail_json(msg=str(exc))

    before = result.pop("before", None)
    after = result.pop("after", None)
    if module._diff and before is not None:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
