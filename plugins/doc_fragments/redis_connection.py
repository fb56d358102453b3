# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How the mapping_store modules reach the gateway's Redis; one place for every module."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  host:
    description:
      - Address of the Redis server that holds the gateway's mappings.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port of the Redis server.
    type: int
    default: 6379
  username:
    description:
      - Redis ACL user. Leave unset for the C(default) user, which is what the
        P(aws_masking.gateway.redis#role) role configures.
    type: str
  password:
    description:
      - Password for C(AUTH). The P(aws_masking.gateway.redis#role) role keeps it in
        C(/etc/aws-masking-gateway/secrets/redis_password) on the Redis host.
      - Never logged and never returned.
    type: str
  database:
    description:
      - Logical database number the gateway uses (the gateway role's C(gateway_redis_database)).
    type: int
    default: 0
  tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  tls_verify:
    description:
      - Check the server's certificate and host name when O(tls=true).
      - Turn it off only to reach a test server with a self-signed certificate.
    type: bool
    default: true
  tls_ca_file:
    description:
      - File of CA certificates to check the server's certificate against, when O(tls=true).
        Unset, the system's trust store is used.
    type: path
  tls_cert_file:
    description:
      - Client certificate, when the server asks for one.
    type: path
  tls_key_file:
    description:
      - Private key of O(tls_cert_file).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the connection to open.
    type: float
    default: 5.0
  timeout:
    description:
      - Seconds to wait for any single reply.
    type: float
    default: 10.0
  scan_count:
    description:
      - C(COUNT) hint given to each C(SCAN) call, and the size of each pipelined batch.
      - Keys are always walked with C(SCAN), never C(KEYS), so the walk never blocks the gateway.
    type: int
    default: 1000
requirements:
  - redis-py (the C(redis) Python package) 4.1 or later for the Python that runs the module on
    the target.
"""
