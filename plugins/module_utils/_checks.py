# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The shape every check of the collection reports, and the guide sections they point at.

A check is ``{"name", "status", "evidence", "section", "remedy"}``: status is pass, fail, warn or
skip, section names the troubleshooting guide's heading to read, evidence never holds a secret.
"""

STATUSES = ("pass", "fail", "warn", "skip")

# Headings of the troubleshooting guide, as "<section> / <issue>".
SECTION_CONFIG = "1. Service Startup Issues / Configuration Errors"
SECTION_PORTS = "1. Service Startup Issues / Port Conflicts"
SECTION_HEALTH = "1. Service Startup Issues / Services Start But Fail Health Checks"
SECTION_NETWORK = "2. Network Connectivity Issues / Services Cannot Communicate"
SECTION_EGRESS = "2. Network Connectivity Issues / External API Access Blocked"
SECTION_KONG = "3. Kong-Specific Issues / Kong Admin API Not Responding"
SECTION_PLUGIN = "3. Kong-Specific Issues / AWS Masker Plugin Not Working"
SECTION_REDIS = "4. Redis Issues / Redis Connection Refused"
SECTION_NGINX = "5. Nginx Proxy Issues / Nginx Not Proxying Requests"


def check(name, status, evidence, section, remedy=""):
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    return {"name": name, "status": status, "evidence": evidence, "section": section,
            "remedy": remedy if status in ("fail", "warn") else ""}


def scrub(text, secrets):
    """``text`` with every secret value replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text
