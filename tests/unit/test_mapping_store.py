"""The mapping store manager and modules, against a private redis-server on a free port.

The server is started here on loopback with its own password and no persistence; the deployed
stack's Redis (port 6379, the aws-masking-* programs) is never touched. The modules run the way
an operator runs them, through the venv's ``ansible`` from the repository root, which finds the
collection through collections/ and ansible.cfg.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import load_module

redis = pytest.importorskip("redis")

REPO = Path(__file__).resolve().parents[2]
MANAGER_PATH = REPO / "plugins" / "module_utils" / "_mapping_store.py"
REDIS_SERVER = "/usr/bin/redis-server"
PASSWORD = "test-only-mapping-store-password"
BIN = Path(sys.executable).parent

SCOPE_A = "0123456789abcdef0123"
SCOPE_B = "fedcba9876543210fedc"

# Distinctive originals: none of them may ever appear in a module's output.
MAPPINGS = [
    (SCOPE_A, "EC2", "i-0a1b2c3d4e5f60718", 1),
    (SCOPE_A, "EC2", "i-0fedcba9876543210", 2),
    (SCOPE_A, "IAM_ROLE_ARN", "arn:aws:iam::123456789012:role/MappingStoreTestRole", 1),
    (SCOPE_B, "S3_BUCKET", "mapping-store-test-bucket-7731", 1),
]
ORIGINALS = [original for _, _, original, _ in MAPPINGS]
TTL = 3600


ms = load_module("_mapping_store", MANAGER_PATH)


def free_port():
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 6379:
            return port


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} is not installed")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    yield port
    client.close()
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def client(redis_server):
    connection = redis.Redis(host="127.0.0.1", port=redis_server, password=PASSWORD)
    connection.flushall()
    yield connection
    connection.close()


def params(port, **extra):
    values = {
        "host": "127.0.0.1",
        "port": port,
        "username": None,
        "password": PASSWORD,
        "database": 0,
        "tls": False,
        "tls_verify": True,
        "tls_ca_file": None,
        "tls_cert_file": None,
        "tls_key_file": None,
        "connect_timeout": 2.0,
        "timeout": 5.0,
        "scan_count": 2,  # small, so every walk spans several SCAN calls and batches
    }
    values.update(extra)
    return values


@pytest.fixture
def store(client, redis_server):
    return ms.MappingStore.connect(params(redis_server))


def key(scope, kind, rest):
    return f"aws_masker:{{{scope}}}:{kind}:{rest}"


def digest(code, original):
    return hashlib.sha1(code.encode() + b"\0" + original.encode()).hexdigest()


def seed(client, ttl=TTL):
    """The keys the gateway's script writes for MAPPINGS."""
    for scope, code, original, number in MAPPINGS:
        token = f"AWS_{code}_{number:06d}"
        client.set(key(scope, "t", token), original, ex=ttl)
        client.set(key(scope, "o", digest(code, original)), token, ex=ttl)
        seq = key(scope, "seq", code)
        if int(client.get(seq) or 0) < number:
            client.set(seq, number, ex=ttl)


def snapshot(client):
    return {k: client.get(k) for k in client.scan_iter(match="aws_masker:*")}


# -- the manager -----------------------------------------------------------------------------


def test_inventory_counts_by_scope_and_code_and_finds_keys_without_ttl(client, store):
    seed(client)
    client.persist(key(SCOPE_B, "seq", "S3_BUCKET"))
    client.set("aws_masker:stray", "x")
    client.set("unrelated:key", "not ours")
    client.set(key(SCOPE_A, "th", "0" * 40), "1", ex=TTL)  # a delivered thinking block

    inventory = store.inventory()

    assert inventory["totals"] == {
        "keys": 13, "originals": 4, "tokens": 4, "sequences": 3, "thinking_blocks": 1,
        "keys_without_ttl": 2, "unrecognised": 1, "scopes": 2,
    }
    assert inventory["scopes"][SCOPE_A] == {
        "keys": 9, "originals": 3, "tokens": 3, "sequences": 2, "thinking_blocks": 1,
        "keys_without_ttl": 0,
    }
    assert inventory["scopes"][SCOPE_B]["keys_without_ttl"] == 1
    assert inventory["token_codes"] == {"EC2": 2, "IAM_ROLE_ARN": 1, "S3_BUCKET": 1}
    assert store.inventory(SCOPE_B)["totals"]["keys"] == 3


def test_a_scope_is_hex_so_it_cannot_widen_the_scan_pattern(store):
    for bad in ["*", "abc*", "ABC", "abc}:*", ""]:
        with pytest.raises(ms.MappingStoreError, match="Cannot select scope"):
            store.inventory(bad)


def test_memory_figures_come_from_info(store):
    memory = store.memory()
    assert memory["used_memory"] > 0
    assert memory["maxmemory_policy"]
    assert memory["redis_version"].count(".") == 2


def test_expire_sets_a_ttl_only_where_there_is_none(client, store):
    seed(client)
    bare = [key(SCOPE_A, "seq", "EC2"), key(SCOPE_B, "t", "AWS_S3_BUCKET_000001")]
    for name in bare:
        client.persist(name)

    predicted = store.expire(600, check_mode=True)
    assert predicted["keys_expired"] == 2
    assert all(client.ttl(name) == -1 for name in bare)

    done = store.expire(600)
    assert done["keys_expired"] == 2
    assert done["before"] == {"keys": 11, "keys_without_ttl": 2}
    assert done["after"] == {"keys": 11, "keys_without_ttl": 0}
    assert all(0 < client.ttl(name) <= 600 for name in bare)
    assert client.ttl(key(SCOPE_A, "t", "AWS_EC2_000001")) > 600  # untouched

    assert store.expire(600)["keys_expired"] == 0
    assert store.expire(600, check_mode=True)["keys_expired"] == 0


def test_flush_of_one_scope_leaves_the_others(client, store):
    seed(client)
    before = snapshot(client)

    predicted = store.flush(SCOPE_A, check_mode=True)
    assert predicted["keys_deleted"] == 8
    assert snapshot(client) == before

    assert store.flush(SCOPE_A)["keys_deleted"] == 8
    remaining = snapshot(client)
    assert len(remaining) == 3
    assert all(SCOPE_B in name.decode() for name in remaining)

    assert store.flush(SCOPE_A)["keys_deleted"] == 0


def test_flush_of_everything_spares_keys_outside_the_prefix(client, store):
    seed(client)
    client.set("unrelated:key", "kept")
    assert store.flush()["keys_deleted"] == 11
    assert snapshot(client) == {}
    assert client.get("unrelated:key") == b"kept"


def test_backup_is_private_atomic_and_keeps_ttls(client, store, tmp_path):
    seed(client)
    client.persist(key(SCOPE_B, "seq", "S3_BUCKET"))
    client.set(key(SCOPE_B, "t", "AWS_S3_BUCKET_000002"), b"\xffnot-utf8\x00", ex=TTL)
    client.hset("aws_masker:not-a-string", "field", "value")
    dest = tmp_path / "mappings.jsonl"

    assert store.backup(str(dest), check_mode=True)["keys"] == 12
    assert not dest.exists()

    result = store.backup(str(dest))
    assert result == {"path": str(dest), "keys": 12, "scopes": 2, "skipped_keys": 1}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mappings.jsonl"]  # no temp file left

    records = [json.loads(line) for line in dest.read_text(encoding="ascii").splitlines()]
    assert {r["type"] for r in records} == {"string"}
    by_key = {r["key"]: r for r in records}
    assert by_key[key(SCOPE_B, "seq", "S3_BUCKET")]["pttl"] is None
    assert 0 < by_key[key(SCOPE_A, "t", "AWS_EC2_000001")]["pttl"] <= TTL * 1000
    assert by_key[key(SCOPE_A, "t", "AWS_EC2_000001")]["value"] == ORIGINALS[0]


def test_backup_into_a_missing_directory_fails_with_the_path(store, tmp_path):
    dest = tmp_path / "missing" / "mappings.jsonl"
    with pytest.raises(ms.MappingStoreError, match=r"Cannot write the backup .*does not exist"):
        store.backup(str(dest))


def test_backup_flush_restore_round_trip(client, store, tmp_path):
    seed(client)
    client.set(key(SCOPE_B, "t", "AWS_S3_BUCKET_000002"), b"\xffnot-utf8\x00", ex=TTL)
    client.persist(key(SCOPE_B, "seq", "S3_BUCKET"))
    before = snapshot(client)
    dest = tmp_path / "mappings.jsonl"
    store.backup(str(dest))
    store.flush()

    predicted = store.restore(str(dest), check_mode=True)
    assert predicted["keys_restored"] == len(before)
    assert snapshot(client) == {}

    result = store.restore(str(dest))
    assert result["keys_restored"] == len(before)
    assert result["conflicts"] == 0
    assert snapshot(client) == before
    assert 0 < client.ttl(key(SCOPE_A, "o", digest("EC2", ORIGINALS[0]))) <= TTL
    assert client.ttl(key(SCOPE_B, "seq", "S3_BUCKET")) == -1

    again = store.restore(str(dest))
    assert again["keys_restored"] == 0
    assert again["keys_present"] == len(before)
    assert store.restore(str(dest), check_mode=True)["keys_restored"] == 0


def test_restore_never_overwrites_a_live_key_and_never_pairs_a_token_with_a_stranger(
    client, store, tmp_path
):
    seed(client)
    dest = tmp_path / "mappings.jsonl"
    store.backup(str(dest))
    store.flush()
    # After the flush the gateway handed AWS_EC2_000001 to another instance.
    other = "i-0999999999999999a"
    client.set(key(SCOPE_A, "t", "AWS_EC2_000001"), other, ex=TTL)
    client.set(key(SCOPE_A, "o", digest("EC2", other)), "AWS_EC2_000001", ex=TTL)
    client.set(key(SCOPE_A, "seq", "EC2"), 1, ex=TTL)

    predicted = store.restore(str(dest), check_mode=True)
    result = store.restore(str(dest))

    # The token key and the o: key of its old original stay out; the sequence goes up to 2.
    assert result["conflicts"] == 2
    assert result["conflict_scopes"] == [SCOPE_A]
    assert result["sequences_raised"] == 1
    assert result["keys_restored"] == 11 - 2 - 1
    assert predicted == result
    assert client.get(key(SCOPE_A, "t", "AWS_EC2_000001")).decode() == other
    assert client.get(key(SCOPE_A, "o", digest("EC2", ORIGINALS[0]))) is None
    assert client.get(key(SCOPE_A, "seq", "EC2")) == b"2"
    assert client.ttl(key(SCOPE_A, "seq", "EC2")) > 0
    assert client.get(key(SCOPE_A, "t", "AWS_EC2_000002")).decode() == ORIGINALS[1]

    again = store.restore(str(dest))
    assert again["keys_restored"] == 0
    assert again["sequences_raised"] == 0
    assert again["conflicts"] == 2


def test_restore_keeps_a_sequence_that_is_ahead(client, store, tmp_path):
    seed(client)
    dest = tmp_path / "mappings.jsonl"
    store.backup(str(dest))
    client.set(key(SCOPE_A, "seq", "EC2"), 40, ex=TTL)

    result = store.restore(str(dest))
    assert result["keys_restored"] == 0
    assert result["sequences_raised"] == 0
    assert result["conflicts"] == 0
    assert client.get(key(SCOPE_A, "seq", "EC2")) == b"40"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "line 2 is not JSON"),
        ('{"key": "other:key", "type": "string", "value": "v", "pttl": null}', "has no key"),
        ('{"key": "aws_masker:x", "type": "hash", "value": "v", "pttl": null}', "not a string"),
        ('{"key": "aws_masker:x", "type": "string", "value": "v", "pttl": -5}', "pttl"),
    ],
)
def test_a_damaged_backup_is_refused_by_line_without_its_content(store, tmp_path, line, problem):
    src = tmp_path / "bad.jsonl"
    good = {"key": "aws_masker:ok", "type": "string", "value": "v", "pttl": None}
    src.write_text(json.dumps(good) + "\n" + line + "\n", encoding="ascii")
    with pytest.raises(ms.MappingStoreError, match=f"Cannot restore from .*{problem}") as error:
        store.restore(str(src))
    assert '"value"' not in str(error.value)


def test_connection_errors_name_the_server_and_the_cause(redis_server):
    with pytest.raises(ms.MappingStoreError, match=r"Cannot authenticate to Redis at 127\.0\.0\.1"):
        ms.MappingStore.connect(params(redis_server, password="wrong"))
    with pytest.raises(ms.MappingStoreError, match=r"\(no password was given\)\.$"):
        ms.MappingStore.connect(params(redis_server, password=None))
    with pytest.raises(ms.MappingStoreError, match=r"Cannot connect to Redis at 127\.0\.0\.1:"):
        ms.MappingStore.connect(params(free_port()))
    with pytest.raises(ms.MappingStoreError, match=r"tls_ca_file /nonexistent\.pem is not"):
        ms.MappingStore.connect(params(redis_server, tls=True, tls_ca_file="/nonexistent.pem"))


# -- the modules, run as an operator runs them -------------------------------------------------


def ansible_bin(name):
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def run_module(name, args, check=False, diff=False):
    """Runs a module on localhost; returns (status, result, whole output)."""
    command = [ansible_bin("ansible"), "localhost", "-m", f"aws_masking.gateway.{name}",
               "-a", json.dumps(args)]
    command += ["--check"] if check else []
    command += ["--diff"] if diff else ["-o"]
    env = dict(os.environ, ANSIBLE_DEPRECATION_WARNINGS="false",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    output = done.stdout + done.stderr
    for original in ORIGINALS:
        assert original not in output, f"an original value leaked from {name}"
    assert PASSWORD not in output
    head = done.stdout.split("=>", 1)
    status = head[0].split("|")[-1].strip() if len(head) == 2 else "UNPARSED"
    result = json.loads(head[1]) if len(head) == 2 and not diff else None
    return status, result, output


@pytest.fixture
def connection(redis_server):
    return {"port": redis_server, "password": PASSWORD, "scan_count": 3}


def test_info_module_reads_only_and_reports_counts(client, connection):
    seed(client)
    before = snapshot(client)
    for check in (False, True):
        status, result, _ = run_module("mapping_store_info", connection, check=check)
        assert status == "SUCCESS"
        assert result["changed"] is False
        assert result["totals"]["keys"] == 11
        assert result["token_codes"]["EC2"] == 2
        assert set(result["scopes"]) == {SCOPE_A, SCOPE_B}
        assert result["memory"]["used_memory"] > 0
    assert snapshot(client) == before


def test_expire_module_changed_in_check_and_normal_mode_then_idempotent(client, connection):
    seed(client)
    client.persist(key(SCOPE_A, "seq", "EC2"))
    args = {**connection, "action": "expire", "ttl": 900}

    status, result, _ = run_module("mapping_store", args, check=True)
    assert (status, result["changed"], result["keys_expired"]) == ("CHANGED", True, 1)
    assert client.ttl(key(SCOPE_A, "seq", "EC2")) == -1

    _, _, diff_output = run_module("mapping_store", args, check=True, diff=True)
    assert '-    "keys_without_ttl": 1' in diff_output
    assert '+    "keys_without_ttl": 0' in diff_output

    status, result, _ = run_module("mapping_store", args)
    assert (status, result["changed"], result["keys_expired"]) == ("CHANGED", True, 1)
    assert 0 < client.ttl(key(SCOPE_A, "seq", "EC2")) <= 900

    for check in (True, False):
        status, result, _ = run_module("mapping_store", args, check=check)
        assert (status, result["changed"], result["keys_expired"]) == ("SUCCESS", False, 0)


def test_modules_backup_flush_restore_round_trip(client, connection, tmp_path):
    seed(client)
    before = snapshot(client)
    dest = tmp_path / "mappings.jsonl"

    status, result, _ = run_module("mapping_store", {**connection, "action": "backup",
                                                     "dest": str(dest)}, check=True)
    assert (status, result["changed"], result["keys"]) == ("CHANGED", True, 11)
    assert not dest.exists()
    status, result, _ = run_module("mapping_store", {**connection, "action": "backup",
                                                     "dest": str(dest)})
    assert (status, result["keys"], result["path"]) == ("CHANGED", 11, str(dest))
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600

    flush = {**connection, "action": "flush", "scope": SCOPE_A}
    status, result, _ = run_module("mapping_store", flush, check=True)
    assert (status, result["keys_deleted"]) == ("CHANGED", 8)
    assert snapshot(client) == before
    status, result, _ = run_module("mapping_store", flush)
    assert (status, result["keys_deleted"]) == ("CHANGED", 8)
    status, result, _ = run_module("mapping_store", flush, check=True)
    assert (status, result["changed"]) == ("SUCCESS", False)
    status, result, _ = run_module("mapping_store", flush)
    assert (status, result["changed"]) == ("SUCCESS", False)

    restore = {**connection, "action": "restore", "src": str(dest)}
    status, result, _ = run_module("mapping_store", restore, check=True)
    assert (status, result["keys_restored"]) == ("CHANGED", 8)
    assert len(snapshot(client)) == 3
    status, result, _ = run_module("mapping_store", restore)
    assert (status, result["keys_restored"], result["keys_present"]) == ("CHANGED", 8, 3)
    assert snapshot(client) == before
    for check in (True, False):
        status, result, _ = run_module("mapping_store", restore, check=check)
        assert (status, result["changed"], result["keys_restored"]) == ("SUCCESS", False, 0)


def test_module_failure_names_the_operation_and_hides_the_password(client, connection):
    status, result, _ = run_module("mapping_store_info", {**connection, "password": "wrong"})
    assert status == "FAILED!"
    assert result["msg"].startswith("Cannot authenticate to Redis at 127.0.0.1:")

    status, result, _ = run_module("mapping_store", {**connection, "action": "backup"})
    assert status == "FAILED!"
    assert "dest" in result["msg"]


# -- the playbook ------------------------------------------------------------------------------


def run_playbook(port, tmp_path, *extra, check=False):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"children": {"redis": {"hosts": {"testhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))
    command = [ansible_bin("ansible-playbook"), "-i", str(inventory), "playbooks/mappings.yml",
               "-e", f"redis_port={port}", "-e", f"mappings_redis_password={PASSWORD}",
               "-e", f"mappings_backup_dir={tmp_path / 'backups'}"]
    for item in extra:
        command += ["-e", item]
    command += ["--check"] if check else []
    env = dict(os.environ, ANSIBLE_DEPRECATION_WARNINGS="false", ANSIBLE_NOCOLOR="1")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    output = done.stdout + done.stderr
    for original in ORIGINALS:
        assert original not in output
    return done.returncode, output


def test_playbook_syntax():
    done = subprocess.run([ansible_bin("ansible-playbook"), "playbooks/mappings.yml",
                           "--syntax-check"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_playbook_inspects_and_refuses_an_unconfirmed_flush(client, redis_server, tmp_path):
    seed(client)
    code, output = run_playbook(redis_server, tmp_path)
    assert code == 0, output
    assert "Mapping keys: 11 in 2 scope(s)" in output
    assert "Tokens by code: EC2=2, IAM_ROLE_ARN=1, S3_BUCKET=1" in output

    code, output = run_playbook(redis_server, tmp_path, "mappings_action=flush")
    assert code != 0
    assert "set mappings_confirm=true" in output
    assert len(snapshot(client)) == 11


def test_playbook_flush_backs_up_first_and_restore_brings_it_back(client, redis_server,
                                                                  tmp_path):
    seed(client)
    before = snapshot(client)

    code, output = run_playbook(redis_server, tmp_path, "mappings_action=flush",
                                "mappings_confirm=true")
    assert code == 0, output
    assert "Keys deleted: 11" in output
    assert snapshot(client) == {}
    backups = sorted((tmp_path / "backups").iterdir())
    assert len(backups) == 1
    assert str(backups[0]) in output
    assert stat.S_IMODE((tmp_path / "backups").stat().st_mode) == 0o700

    code, output = run_playbook(redis_server, tmp_path, "mappings_action=restore",
                                "mappings_confirm=true", f"mappings_restore_src={backups[0]}")
    assert code == 0, output
    assert "11 keys written back" in output
    assert snapshot(client) == before


# -- TLS and the documented contract -----------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if not os.access(REDIS_SERVER, os.X_OK) or not shutil.which("openssl"):
        pytest.skip("redis-server or openssl is not installed")
    workdir = tmp_path_factory.mktemp("redis-tls")
    cert, private_key = workdir / "server.pem", workdir / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(private_key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    port = free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(private_key),
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tls = params(port, tls=True, tls_ca_file=str(cert))
    deadline = time.monotonic() + 10
    while True:
        try:
            ms.MappingStore.connect(tls)
            break
        except ms.MappingStoreError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.skip("redis-server did not start with TLS (built without it?)")
            time.sleep(0.05)
    yield tls
    process.terminate()
    process.wait(timeout=10)


def test_tls_checks_the_server_certificate(tls_server):
    assert ms.MappingStore.connect(tls_server).inventory()["totals"]["keys"] == 0

    with pytest.raises(ms.MappingStoreError, match=r"Cannot connect to Redis at .*certificate"):
        ms.MappingStore.connect({**tls_server, "tls_ca_file": None})
    unchecked = {**tls_server, "tls_ca_file": None, "tls_verify": False}
    assert ms.MappingStore.connect(unchecked).memory()["redis_version"]
    with pytest.raises(ms.MappingStoreError, match="Cannot connect to Redis at"):
        ms.MappingStore.connect({**tls_server, "tls": False})


def test_tls_options_reach_the_module(tls_server):
    args = {"port": tls_server["port"], "password": PASSWORD, "tls": True,
            "tls_ca_file": tls_server["tls_ca_file"]}
    status, result, _ = run_module("mapping_store_info", args)
    assert (status, result["totals"]["keys"]) == ("SUCCESS", 0)


@pytest.mark.parametrize("name", ["mapping_store", "mapping_store_info"])
def test_documented_connection_options_are_the_ones_the_module_takes(name):
    done = subprocess.run([ansible_bin("ansible-doc"), "-t", "module", "--json",
                           f"aws_masking.gateway.{name}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)[f"aws_masking.gateway.{name}"]["doc"]
    assert {"check_mode", "diff_mode", "idempotent"} <= set(doc["attributes"])
    for option, spec in ms.connection_argument_spec().items():
        documented = doc["options"][option]
        assert documented["type"] == spec["type"], option
        assert documented.get("default") == spec.get("default"), option


def test_playbook_check_mode_changes_nothing_and_expire_converges(client, redis_server,
                                                                  tmp_path):
    seed(client)
    client.persist(key(SCOPE_A, "seq", "EC2"))
    before = snapshot(client)

    code, output = run_playbook(redis_server, tmp_path, "mappings_action=flush",
                                "mappings_confirm=true", check=True)
    assert code == 0, output
    assert "[check mode, nothing changed] flush" in output
    assert "Keys deleted: 11" in output
    assert snapshot(client) == before
    assert not (tmp_path / "backups").exists()

    code, output = run_playbook(redis_server, tmp_path, "mappings_action=expire")
    assert code == 0, output
    assert "Keys given a TTL of 86400 s: 1 of 11" in output
    code, output = run_playbook(redis_server, tmp_path, "mappings_action=expire")
    assert code == 0, output
    assert "changed=0" in output
