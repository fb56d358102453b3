# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The shape of an operations check and the guide sections checks point at.

Every check of the verify, health and validate playbooks is one dict:

    {"name": str, "status": "pass" | "fail" | "warn" | "skip", "evidence": str,
     "section": str, "remedy": str}

``section`` names the section of the troubleshooting guide to read, by its headings
(docs/TROUBLESHOOTING.md uses the same names). SECTIONS is the one table of them: modules and
the report filters import it, so a renamed heading changes here only. Evidence is written by
the code that made the observation and never holds a secret or an AWS original: counts,
addresses of our own services, status codes and error classes only.
"""

STATUSES = ("pass", "fail", "warn", "skip")

SECTIONS = {
    "startup_restarting": "1. Service Startup Issues / Container Keeps Restarting",
    "startup_memory": "1. Service Startup Issues / Container Keeps Restarting / Memory Issues",
    "startup_ports": "1. Service Startup Issues / Container Keeps Restarting / Port Conflicts",
    "startup_config":
        "1. Service Startup Issues / Container Keeps Restarting / Configuration Errors",
    "startup_health": "1. Service Startup Issues / Services Start But Fail Health Checks",
    "network_internal": "2. Network Connectivity Issues / Services Cannot Communicate",
    "network_external": "2. Network Connectivity Issues / External API Access Blocked",
    "gateway_admin": "3. Kong-Specific Issues / Kong Admin API Not Responding",
    "plugin": "3. Kong-Specific Issues / AWS Masker Plugin Not Working",
    "redis_connection": "4. Redis Issues / Redis Connection Refused",
    "redis_memory": "4. Redis Issues / Redis Memory Issues",
    "nginx_proxy": "5. Nginx Proxy Issues / Nginx Not Proxying Requests",
    "nginx_headers": "5. Nginx Proxy Issues / Header Transformation Not Working",
    "logs": "Diagnostic Tools & Commands / Log Analysis",
    "tls": "Advanced Troubleshooting / SSL/TLS Issues / Certificate Problems",
    "data_consistency":
        "Advanced Troubleshooting / Data Consistency Issues / Redis Data Corruption",
}


def make_check(name, status, evidence, section, remedy=""):
    """One check; section is a key of SECTIONS. A passed or skipped check carries no remedy."""
    if status not in STATUSES:
        raise ValueError(f"check {name}: status {status!r} is not one of {', '.join(STATUSES)}")
    if section not in SECTIONS:
        raise ValueError(f"check {name}: section {section!r} is not a key of SECTIONS")
    return {
        "name": name,
        "status": status,
        "evidence": evidence,
        "section": SECTIONS[section],
        "remedy": remedy if status in ("fail", "warn") else "",
    }


def counts(checks):
    """Number of checks of each status (every status present, 0 when none)."""
    tally = dict.fromkeys(STATUSES, 0)
    for item in checks:
        tally[item["status"]] += 1
    return tally


def healthy(checks):
    """True when no check failed (warnings and skips do not make a host unhealthy)."""
    return all(item["status"] != "fail" for item in checks)
