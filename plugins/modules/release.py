#!/usr/bin/python
# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: release
short_description: Records the gateway's deployed files and packages as releases, and restores them
version_added: 0.1.0
description:
  - C(record) copies the deployed files (rendered configurations, the Lua plugin tree, the
    catalog, the service manager's program files) into a new release directory
    C(<releases_dir>/<id>/) with a C(manifest.json) (checksums, modes, owners, installed package
    versions, the variables given, the collection version), unless a release already holds
    exactly this state; then nothing is written. It keeps the newest I(keep) releases.
  - C(restore) writes a release's files back byte for byte (mode and owner too), removes files
    that appeared since under a recorded directory, and returns the package versions that differ
    from the installed ones, for the caller to install. It fails before touching anything when
    one of those versions is in no configured APT source.
  - Secrets are never stored. Each value read from I(secret_files) is replaced by
    C(@@AWS_MASKING_SECRET:<name>@@) in the stored copies and put back from the same file on
    restore, so the secrets stay under C(/etc/aws-masking-gateway/secrets) and are not versioned.
    If a secret was rotated since, the restored files carry the current one.
author:
  - AWS masking gateway maintainers (!UNKNOWN)
extends_documentation_fragment:
  - aws_masking.gateway.attributes
attributes:
  check_mode:
    support: full
    details: Reports what would be recorded, pruned, written or removed, and writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: >-
      Recording an unchanged state, or restoring the release the files already match, changes
      nothing.
options:
  action:
    description: What to do.
    type: str
    choices: [record, restore]
    required: true
  releases_dir:
    description: Directory holding one sub-directory per release (created mode 0700).
    type: path
    default: /var/lib/aws-masking-gateway/releases
  paths:
    description:
      - Files and directories to record (absolute paths). A directory is recorded with every
        file under it; a path that does not exist is left out.
      - Only used by C(record); a restore uses the paths of the release's manifest.
    type: list
    elements: path
    default: []
  packages:
    description: Debian packages whose installed versions are recorded (absent ones are left out).
    type: list
    elements: str
    default: []
  variables:
    description: Settings that matter for the release, stored in its manifest; never a secret.
    type: dict
    default: {}
  secret_files:
    description: Secret name to the file holding it; its value never reaches a release.
    type: dict
    default: {}
  promote:
    description:
      - When a release that is not the newest already holds the current state, C(record) makes
        it the newest (a redeploy of an older state), which reports changed. The rollback
        playbook's own record of the state before it restores sets this false, so that rolling
        back twice does not walk back and forth.
    type: bool
    default: true
  secret_dirs:
    description: Directories whose every file is a secret like those of I(secret_files), named
      after the file (C(/etc/aws-masking-gateway/secrets)).
    type: list
    elements: path
    default: []
  keep:
    description: Releases kept by C(record); older ones are deleted. C(0) keeps every release.
    type: int
    default: 5
  release:
    description: Release id C(restore) restores. Default, the release before the newest one.
    type: str
  collection_version:
    description: Version of the collection that deployed, stored in the manifest.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: The deployed state is recorded as a release
  aws_masking.gateway.release:
    action: record
    paths:
      - /etc/aws-masking-gateway/edge/nginx.conf
      - /opt/aws-masking-gateway/lua
    packages: [nginx, redis-server]
    secret_files:
      redis_password: /etc/aws-masking-gateway/secrets/redis_password
    keep: 5

- name: The previous release is restored
  aws_masking.gateway.release:
    action: restore
    secret_files:
      redis_password: /etc/aws-masking-gateway/secrets/redis_password
  register: restored
"""

RETURN = r"""
release:
  description: The release that holds the state (C(record)) or was restored (C(restore)); null in
    check mode when a new one would be created.
  returned: success
  type: str
  sample: 20260101T120000123456Z
created:
  description: Whether C(record) created a new release (or would, in check mode).
  returned: action is record
  type: bool
pruned:
  description: Releases deleted by C(record) to keep I(keep) (or that would be).
  returned: action is record
  type: list
  elements: str
releases_before:
  description: Every release id before C(record) ran, oldest first.
  returned: action is record
  type: list
  elements: str
releases:
  description: Every release id after the run, oldest first.
  returned: success
  type: list
  elements: str
files_written:
  description: Paths C(restore) wrote back (or would).
  returned: action is restore
  type: list
  elements: str
files_removed:
  description: Paths C(restore) removed because the release does not have them (or would).
  returned: action is restore
  type: list
  elements: str
packages:
  description: C(name=version) pins of the release that differ from what is installed; install
    them with ansible.builtin.apt.
  returned: action is restore
  type: list
  elements: str
  sample: [nginx=1.22.1-9]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aws_masking.gateway.plugins.module_utils._release import (
    ReleaseError,
    Releases,
    read_secrets,
    unavailable_packages,
)


def record(module, releases, secrets):
    params = module.params
    if params["keep"] < 0:
        raise ReleaseError(f"keep={params['keep']} is not allowed; allowed: an integer >= 0")
    result, changed = releases.record(
        params["paths"], params["packages"], params["variables"], secrets,
        {"collection_version": params["collection_version"]}, params["keep"], module.check_mode,
        promote=params["promote"])
    return result, changed


def restore(module, releases, secrets):
    release_id = module.params["release"] or releases.previous()
    manifest, write, remove, packages = releases.plan_restore(release_id, secrets)
    pins = [f"{name}={version}" for name, version in packages.items()]
    missing = unavailable_packages(packages) if packages else []
    if missing:
        raise ReleaseError(f"release {release_id} needs {', '.join(missing)}, which no configured "
                           "APT source offers (apt-cache show finds nothing); add a source with "
                           "that version or roll back to another release")
    changed = bool(write or remove or pins)
    if changed and not module.check_mode:
        releases.restore_files(release_id, manifest, write, remove, secrets)
    return {"release": release_id, "files_written": write, "files_removed": remove,
            "packages": pins}, changed


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["record", "restore"]},
            "releases_dir": {"type": "path", "default": "/var/lib/aws-masking-gateway/releases"},
            "paths": {"type": "list", "elements": "path", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "variables": {"type": "dict", "default": {}},
            "secret_files": {"type": "dict", "default": {}, "no_log": False},
            "secret_dirs": {"type": "list", "elements": "path", "default": [], "no_log": False},
            "keep": {"type": "int", "default": 5},
            "promote": {"type": "bool", "default": True},
            "release": {"type": "str"},
            "collection_version": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    releases = Releases(module.params["releases_dir"])
    try:
        secrets = read_secrets(module.params["secret_files"], module.params["secret_dirs"])
        action = record if module.params["action"] == "record" else restore
        result, changed = action(module, releases, secrets)
    except (ReleaseError, OSError, KeyError) as exc:
        module.fail_json(msg=f"{type(exc).__name__}: {exc}" if not isinstance(exc, ReleaseError)
                         else str(exc))
    module.exit_json(changed=changed, releases=releases.ids(), **result)


if __name__ == "__main__":
    main()
