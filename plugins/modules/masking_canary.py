#!/usr/bin/python
# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
module: masking_canary
short_description: Proves that the live gateway masks a request and restores its answer
version_added: 0.1.0
description:
  - Sends a Messages API request holding known, made-up AWS identifiers through the edge at
    O(url), with the gateway's canary secret in the C(x-aws-masker-canary) header.
  - The gateway masks it as any request, under a token scope of its own, but answers it itself
    instead of proxying it, so no API tokens are spent and nothing reaches the upstream. Its
    answer carries the masked user text, restored by the gateway's normal response path, and
    the upstream-bound body in the C(x-aws-masker-canary-upstream-body) header.
  - Each check passes when the upstream-bound body holds none of the originals and a token of
    the C(AWS_<CODE>_<6 digits>) grammar for each, and the answer's text is the original text
    exactly. C(canary_json) checks a plain answer, C(canary_sse) a streamed one whose text is
    cut into small deltas.
  - A gateway with another canary secret answers 403; the check then names the configuration
    section of the troubleshooting guide.
  - Evidence holds counts and token codes only, never an identifier.
author:
  - AWS masking gateway maintainers (!UNKNOWN)
extends_documentation_fragment:
  - aws_masking.gateway.attributes
attributes:
  check_mode:
    support: full
    details: >-
      The canary changes nothing a client can see: it writes token mappings of the canary's
      own scope to Redis, as any request does, which expire with the gateway's mapping TTL.
      It runs in check mode too.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: C(changed) is always false.
options:
  url:
    description: Base URL of the edge (or of the gateway's proxy port).
    type: str
    required: true
  secret:
    description:
      - The gateway's canary secret (the gateway role keeps it in
        C(/etc/aws-masking-gateway/secrets/canary_secret) on each gateway host).
    type: str
    required: true
  modes:
    description: Which answers to check.
    type: list
    elements: str
    choices: [json, sse]
    default: [json, sse]
  timeout:
    description: Seconds each request may take.
    type: float
    default: 10.0
  validate_certs:
    description: Check the certificate of an https O(url).
    type: bool
    default: true
seealso:
  - module: aws_masking.gateway.gateway_health
"""

EXAMPLES = r"""
- name: The canary secret is read
  ansible.builtin.slurp:
    src: /etc/aws-masking-gateway/secrets/canary_secret
  register: canary_secret
  no_log: true

- name: The gateway masks and restores a canary through the edge
  aws_masking.gateway.masking_canary:
    url: http://127.0.0.1:8085
    secret: "{{ canary_secret.content | b64decode | trim }}"
  register: canary
"""

RETURN = r"""
checks:
  description: One check per mode, in the shape of the gateway_health module's checks.
  returned: always
  type: list
  elements: dict
  sample:
    - name: canary_json
      status: pass
      evidence: >-
        7 identifiers -> 7 tokens (ARN, EC2, IAM_ACCESS_KEY, ...), 0 originals in the
        upstream-bound body; the answer restored exactly
      section: 3. Kong-Specific Issues / AWS Masker Plugin Not Working
      remedy: ""
healthy:
  description: True when every mode passed.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aws_masking.gateway.plugins.module_utils import (
    _canary as canary,
)
from ansible_collections.aws_masking.gateway.plugins.module_utils._checks import (
    healthy,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "secret": {"type": "str", "required": True, "no_log": True},
            "modes": {"type": "list", "elements": "str", "choices": ["json", "sse"],
                      "default": ["json", "sse"]},
            "timeout": {"type": "float", "default": 10.0},
            "validate_certs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    checks = [canary.run(params["url"], params["secret"], stream=mode == "sse",
                         timeout=params["timeout"], validate_certs=params["validate_certs"])
              for mode in params["modes"]]
    module.exit_json(changed=False, checks=checks, healthy=healthy(checks))


if __name__ == "__main__":
    main()
