# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Operations on the gateway's mapping store, shared by the mapping_store modules.

Keys (docs/ARCHITECTURE.md, "Mapping store"), all strings with a sliding TTL:

    aws_masker:{<scope>}:o:<sha1(code "\\0" original)>  -> token
    aws_masker:{<scope>}:t:<token>                      -> original
    aws_masker:{<scope>}:seq:<CODE>                     -> last number issued
    aws_masker:{<scope>}:th:<digest>                    -> 1: a thinking block delivered

Keys are walked with SCAN, never KEYS, so a large store never blocks the gateway. Nothing here
returns or logs a stored value: results carry counts, scope ids (already hashes) and token
codes. Backup files are the exception by nature: they hold the originals, so they are written
with mode 0600 and must be kept like a secret.

Requires redis-py (the ``redis`` Python package) 4.1 or later where the module runs.
"""

import hashlib
import json
import os
import re
import tempfile
import traceback
from collections import Counter

try:
    import redis
    from redis import exceptions as redis_exceptions
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    redis = None
    redis_exceptions = None
    REDIS_IMPORT_ERROR = traceback.format_exc()
else:
    REDIS_IMPORT_ERROR = None

KEY_PREFIX = "aws_masker:"
KEY_RE = re.compile(r"^aws_masker:\{([0-9a-f]+)\}:(o|t|seq|th):(.+)$")
TOKEN_RE = re.compile(r"^AWS_([A-Z][A-Z0-9_]*)_([0-9]{6})$")
SCOPE_RE = re.compile(r"^[0-9a-f]{1,64}$")
KINDS = {"o": "originals", "t": "tokens", "seq": "sequences", "th": "thinking_blocks"}

# Raises a sequence to the backup's number, never lowers it, and keeps the key's TTL. A lower
# live number would only make the gateway retry numbers the restored tokens hold.
_RAISE_SEQUENCE_SCRIPT = """
local live = redis.call('GET', KEYS[1])
if not live then
  if tonumber(ARGV[2]) > 0 then
    return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') and 1 or 0
  end
  return redis.call('SET', KEYS[1], ARGV[1], 'NX') and 1 or 0
end
if tonumber(live) and tonumber(live) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
  return 1
end
return 0
"""


class MappingStoreError(Exception):
    """An operation on the mapping store failed; the message is safe to show."""


def connection_argument_spec():
    """Argument spec of the options in the redis_connection doc fragment."""
    return {
        "host": {"type": "str", "default": "127.0.0.1"},
        "port": {"type": "int", "default": 6379},
        "username": {"type": "str"},
        "password": {"type": "str", "no_log": True},
        "database": {"type": "int", "default": 0},
        "tls": {"type": "bool", "default": False},
        "tls_verify": {"type": "bool", "default": True},
        "tls_ca_file": {"type": "path"},
        "tls_cert_file": {"type": "path"},
        "tls_key_file": {"type": "path"},
        "connect_timeout": {"type": "float", "default": 5.0},
        "timeout": {"type": "float", "default": 10.0},
        "scan_count": {"type": "int", "default": 1000},
    }


def scope_pattern(scope=None):
    """SCAN pattern for one scope's keys, or for every key of the gateway."""
    if scope is None:
        return KEY_PREFIX + "*"
    if not SCOPE_RE.match(scope):
        raise MappingStoreError(
            f"Cannot select scope {scope!r}: a scope id is lower-case hex (at most 64 digits)."
        )
    return KEY_PREFIX + "{" + scope + "}:*"


def parse_key(key):
    """(scope, kind, rest) of a gateway key, or None for a key outside the layout."""
    match = KEY_RE.match(key)
    return match.groups() if match else None


def token_code(token):
    """The code of a token (``EC2`` for ``AWS_EC2_000001``), or None."""
    match = TOKEN_RE.match(token)
    return match.group(1) if match else None


def _text(raw):
    # Values are stored as bytes; surrogateescape carries any byte through JSON and back.
    return raw.decode("utf-8", "surrogateescape")


def _raw(text):
    return text.encode("utf-8", "surrogateescape")


def _cause(exc):
    """The upstream error as a clause, without its own final period."""
    return str(exc).rstrip(". ") or type(exc).__name__


def _new_counts():
    return {
        "keys": 0,
        "originals": 0,
        "tokens": 0,
        "sequences": 0,
        "thinking_blocks": 0,
        "keys_without_ttl": 0,
    }


class MappingStore:
    """The gateway's keys in one Redis database."""

    def __init__(self, client, scan_count=1000):
        if scan_count < 1:
            raise MappingStoreError(
                f"Cannot walk the mapping keys with scan_count={scan_count}: use 1 or more."
            )
        self.client = client
        self.scan_count = scan_count

    @classmethod
    def connect(cls, params):
        """Connects with the options of the redis_connection fragment and checks with PING."""
        if redis is None:
            raise MappingStoreError("Cannot connect to Redis: the redis Python package is missing.")
        where = f"{params['host']}:{params['port']}/{params['database']}"
        kwargs = {
            "host": params["host"],
            "port": params["port"],
            "db": params["database"],
            "username": params.get("username") or None,
            "password": params.get("password") or None,
            "socket_connect_timeout": params["connect_timeout"],
            "socket_timeout": params["timeout"],
            "decode_responses": False,
        }
        if params.get("tls"):
            for option in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
                path = params.get(option)
                if path and not os.access(path, os.R_OK):
                    raise MappingStoreError(
                        f"Cannot connect to Redis at {where}: {option} {path} is not a readable "
                        "file."
                    )
            kwargs.update(
                ssl=True,
                ssl_ca_certs=params.get("tls_ca_file"),
                ssl_certfile=params.get("tls_cert_file"),
                ssl_keyfile=params.get("tls_key_file"),
                ssl_cert_reqs="required" if params.get("tls_verify", True) else "none",
            )
            if not params.get("tls_verify", True):
                kwargs["ssl_check_hostname"] = False
        try:
            client = redis.Redis(**kwargs)
            client.ping()
        except redis_exceptions.AuthenticationError as exc:
            hint = "check the password" if kwargs["password"] else "no password was given"
            raise MappingStoreError(
                f"Cannot authenticate to Redis at {where}: {_cause(exc)} ({hint})."
            ) from exc
        except redis_exceptions.RedisError as exc:
            raise MappingStoreError(f"Cannot connect to Redis at {where}: {_cause(exc)}.") from exc
        return cls(client, params.get("scan_count", 1000))

    # -- walking ---------------------------------------------------------------------------

    def _batches(self, scope=None):
        """Lists of distinct gateway keys (str), SCAN's duplicates removed."""
        seen = set()
        batch = []
        try:
            for raw in self.client.scan_iter(match=scope_pattern(scope), count=self.scan_count):
                key = _text(raw)
                if key in seen:
                    continue
                seen.add(key)
                batch.append(key)
                if len(batch) >= self.scan_count:
                    yield batch
                    batch = []
        except redis_exceptions.RedisError as exc:
            raise MappingStoreError(
                f"Cannot walk the mapping keys with SCAN: {_cause(exc)}."
            ) from exc
        if batch:
            yield batch

    def _pipeline(self, operation, calls):
        """Runs calls (a function of a pipeline) in one round trip; errors come back as values."""
        try:
            pipe = self.client.pipeline(transaction=False)
            calls(pipe)
            return pipe.execute(raise_on_error=False)
        except redis_exceptions.RedisError as exc:
            raise MappingStoreError(f"Cannot {operation}: {_cause(exc)}.") from exc

    def walk(self, scope=None):
        """Yields (key, pttl) for every gateway key; pttl is -1 for a key without a TTL."""
        for batch in self._batches(scope):
            pttls = self._pipeline(
                "read the TTLs of the mapping keys",
                lambda pipe, keys=batch: [pipe.pttl(_raw(key)) for key in keys],
            )
            for key, pttl in zip(batch, pttls):
                if isinstance(pttl, int) and pttl != -2:  # -2: gone since SCAN saw it
                    yield key, pttl

    # -- reading ---------------------------------------------------------------------------

    def inventory(self, scope=None):
        """Counts of the gateway's keys: in total, by scope, by token code; keys without TTL."""
        totals = _new_counts()
        totals["unrecognised"] = 0
        scopes = {}
        codes = Counter()
        for key, pttl in self.walk(scope):
            totals["keys"] += 1
            no_ttl = pttl == -1
            totals["keys_without_ttl"] += no_ttl
            parsed = parse_key(key)
            if parsed is None:
                totals["unrecognised"] += 1
                continue
            key_scope, kind, rest = parsed
            counts = scopes.setdefault(key_scope, _new_counts())
            counts["keys"] += 1
            counts[KINDS[kind]] += 1
            counts["keys_without_ttl"] += no_ttl
            totals[KINDS[kind]] += 1
            if kind == "t":
                codes[token_code(rest) or "unrecognised"] += 1
        totals["scopes"] = len(scopes)
        return {"totals": totals, "scopes": scopes, "token_codes": dict(sorted(codes.items()))}

    def memory(self):
        """Memory figures, eviction policy and evictions, server version (INFO)."""
        try:
            info = self.client.info("memory")
            stats = self.client.info("stats")
            server = self.client.info("server")
        except redis_exceptions.RedisError as exc:
            raise MappingStoreError(f"Cannot read INFO from Redis: {_cause(exc)}.") from exc
        return {
            "used_memory": info.get("used_memory"),
            "used_memory_human": info.get("used_memory_human"),
            "used_memory_peak_human": info.get("used_memory_peak_human"),
            "maxmemory": info.get("maxmemory"),
            "maxmemory_human": info.get("maxmemory_human"),
            "maxmemory_policy": info.get("maxmemory_policy"),
            "evicted_keys": stats.get("evicted_keys"),
            "redis_version": server.get("redis_version"),
        }

    # -- changing --------------------------------------------------------------------------

    def expire(self, ttl, scope=None, check_mode=False):
        """Gives every key without a TTL one of ttl seconds. Returns counts before and after."""
        if ttl < 1:
            raise MappingStoreError(f"Cannot set a TTL of {ttl} seconds: use 1 or more.")
        keys = 0
        missing = []
        for key, pttl in self.walk(scope):
            keys += 1
            if pttl == -1:
                missing.append(key)
        expired = len(missing)
        if not check_mode:
            expired = 0
            for start in range(0, len(missing), self.scan_count):
                batch = missing[start:start + self.scan_count]
                results = self._pipeline(
                    "set a TTL on the mapping keys without one",
                    lambda pipe, keys=batch: [pipe.expire(_raw(key), ttl) for key in keys],
                )
                expired += sum(1 for result in results if result is True)
        return {
            "keys": keys,
            "keys_expired": expired,
            "before": {"keys": keys, "keys_without_ttl": len(missing)},
            "after": {"keys": keys, "keys_without_ttl": len(missing) - expired},
        }

    def flush(self, scope=None, check_mode=False):
        """Deletes one scope's keys, or every gateway key (UNLINK, in batches)."""
        found = 0
        deleted = 0
        scopes = set()
        for batch in self._batches(scope):
            found += len(batch)
            scopes.update(parsed[0] for parsed in map(parse_key, batch) if parsed)
            if check_mode:
                continue
            results = self._pipeline(
                "delete the mapping keys",
                lambda pipe, keys=batch: [pipe.unlink(_raw(key)) for key in keys],
            )
            deleted += sum(result for result in results if isinstance(result, int))
        deleted = found if check_mode else deleted
        return {
            "keys_deleted": deleted,
            "scopes": len(scopes),
            "before": {"keys": found},
            "after": {"keys": found - deleted},
        }

    def backup(self, dest, scope=None, check_mode=False):
        """Writes every string key to dest as JSON lines {key, type, value, pttl}, atomically.

        pttl is the remaining TTL in milliseconds, or null for a key without one. The file
        holds the originals: it is created with mode 0600 and replaces dest only when complete.
        """
        directory = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(directory):
            raise MappingStoreError(
                f"Cannot write the backup {dest}: directory {directory} does not exist."
            )
        written = 0
        skipped = 0
        scopes = set()
        handle = None
        tmp_path = None
        try:
            if not check_mode:
                fd, tmp_path = tempfile.mkstemp(
                    dir=directory, prefix="." + os.path.basename(dest) + ".", suffix=".tmp"
                )
                os.fchmod(fd, 0o600)
                handle = os.fdopen(fd, "w", encoding="ascii")
            for batch in self._batches(scope):
                types = self._pipeline(
                    "read the types of the mapping keys",
                    lambda pipe, keys=batch: [pipe.type(_raw(key)) for key in keys],
                )
                strings = [key for key, kind in zip(batch, types) if kind == b"string"]
                skipped += len(batch) - len(strings)
                values = self._pipeline(
                    "read the mapping keys",
                    lambda pipe, keys=strings: [
                        call for key in keys for call in (pipe.get(_raw(key)), pipe.pttl(_raw(key)))
                    ],
                )
                for index, key in enumerate(strings):
                    value, pttl = values[2 * index], values[2 * index + 1]
                    if not isinstance(value, bytes) or not isinstance(pttl, int) or pttl == -2:
                        continue  # expired or deleted since SCAN saw it
                    written += 1
                    parsed = parse_key(key)
                    if parsed:
                        scopes.add(parsed[0])
                    if handle is not None:
                        record = {
                            "key": key,
                            "type": "string",
                            "value": _text(value),
                            "pttl": pttl if pttl > 0 else None,
                        }
                        handle.write(json.dumps(record, sort_keys=True) + "\n")
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                handle = None
                os.replace(tmp_path, dest)
                tmp_path = None
                _fsync_directory(directory)
        except OSError as exc:
            raise MappingStoreError(f"Cannot write the backup {dest}: {_cause(exc)}.") from exc
        finally:
            if handle is not None:
                handle.close()
            if tmp_path is not None and os.path.exists(tmp_path):
                os.unlink(tmp_path)
        return {"path": dest, "keys": written, "scopes": len(scopes), "skipped_keys": skipped}

    def restore(self, src, check_mode=False):
        """Writes back the keys of a backup that are missing, with their recorded TTLs.

        A live key with another value is left alone and counted as a conflict; an ``o:`` key
        is only restored when the token it names maps back to its original, so a restore never
        pairs an original with a token that now stands for something else. A sequence is
        raised to the backup's number, never lowered.
        """
        records = read_backup(src)
        live = self._live_values([record["key"] for record in records])
        plan = _plan_restore(records, live)

        result = {
            "records": len(records),
            "keys_restored": 0,
            "sequences_raised": 0,
            "keys_present": plan["present"],
            "conflicts": plan["conflicts"],
        }
        if check_mode:
            result["keys_restored"] = len(plan["restore"]) + len(plan["restore_pairs"])
            result["sequences_raised"] = len(plan["raise"])
            result["conflict_scopes"] = sorted(plan["conflict_scopes"])
            return result

        failed = set()
        for record in plan["restore"]:
            if self._set_missing(record):
                result["keys_restored"] += 1
            else:
                failed.add(record["key"])
                _count_conflict(result, plan, record["key"])
        for record, token_key in plan["restore_pairs"]:
            if token_key not in failed and self._set_missing(record):
                result["keys_restored"] += 1
            else:
                _count_conflict(result, plan, record["key"])
        if plan["raise"]:
            raise_sequence = self.client.register_script(_RAISE_SEQUENCE_SCRIPT)
            for record in plan["raise"]:
                try:
                    raised = raise_sequence(
                        keys=[_raw(record["key"])],
                        args=[_raw(record["value"]), record["pttl"] or 0],
                    )
                except redis_exceptions.RedisError as exc:
                    raise MappingStoreError(
                        f"Cannot raise the token sequence of a restored scope: {_cause(exc)}."
                    ) from exc
                result["sequences_raised"] += int(raised)
        result["conflict_scopes"] = sorted(plan["conflict_scopes"])
        return result

    def _live_values(self, keys):
        values = {}
        for start in range(0, len(keys), self.scan_count):
            batch = keys[start:start + self.scan_count]
            results = self._pipeline(
                "read the live mapping keys",
                lambda pipe, keys=batch: [pipe.get(_raw(key)) for key in keys],
            )
            for key, value in zip(batch, results):
                if isinstance(value, Exception):
                    values[key] = _WRONG_TYPE
                elif value is not None:
                    values[key] = _text(value)
        return values

    def _set_missing(self, record):
        """SET NX with the recorded TTL; False when a key appeared meanwhile."""
        try:
            return bool(
                self.client.set(
                    _raw(record["key"]), _raw(record["value"]), px=record["pttl"], nx=True
                )
            )
        except redis_exceptions.RedisError as exc:
            raise MappingStoreError(f"Cannot restore a mapping key: {_cause(exc)}.") from exc


_WRONG_TYPE = object()


def _count_conflict(result, plan, key):
    result["conflicts"] += 1
    parsed = parse_key(key)
    if parsed:
        plan["conflict_scopes"].add(parsed[0])


def _plan_restore(records, live):
    """Sorts backup records into: restore, restore_pairs (o: keys), raise, present, conflicts."""
    plan = {
        "restore": [],
        "restore_pairs": [],
        "raise": [],
        "present": 0,
        "conflicts": 0,
        "conflict_scopes": set(),
    }
    # What each t: key will hold once the t: keys are restored.
    originals = {}
    pending_pairs = []

    for record in records:
        key, value = record["key"], record["value"]
        parsed = parse_key(key)
        kind = parsed[1] if parsed else None
        current = live.get(key)
        if current == value:
            plan["present"] += 1
            if kind == "t":
                originals[key] = value
        elif current is None and kind == "o":
            pending_pairs.append(record)
        elif current is None:
            plan["restore"].append(record)
            if kind == "t":
                originals[key] = value
        elif kind == "seq" and current is not _WRONG_TYPE and _is_number(current):
            if _is_number(value) and int(value) > int(current):
                plan["raise"].append(record)
            else:
                plan["present"] += 1  # the live sequence is ahead: nothing to do
        else:
            plan["conflicts"] += 1
            plan["conflict_scopes"].add(parsed[0] if parsed else "unrecognised")
            if kind == "t" and current is not _WRONG_TYPE:
                originals[key] = current

    for record in pending_pairs:
        scope, _code, digest = parse_key(record["key"])
        token = record["value"]
        code = token_code(token)
        token_key = KEY_PREFIX + "{" + scope + "}:t:" + token
        original = originals.get(token_key)
        if original is None:
            original = live.get(token_key)
        if (
            code is not None
            and isinstance(original, str)
            and hashlib.sha1(_raw(code) + b"\0" + _raw(original)).hexdigest() == digest
        ):
            plan["restore_pairs"].append((record, token_key))
        else:
            plan["conflicts"] += 1
            plan["conflict_scopes"].add(scope)
    return plan


def _is_number(text):
    return isinstance(text, str) and text.isdigit()


def read_backup(src):
    """Records of a backup file, checked; errors name the line, never its content."""
    records = []
    try:
        with open(src, encoding="ascii") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                records.append(_check_record(src, number, line))
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingStoreError(f"Cannot read the backup {src}: {_cause(exc)}.") from exc
    return records


def _check_record(src, number, line):
    try:
        record = json.loads(line)
    except ValueError:
        raise MappingStoreError(
            f"Cannot restore from {src}: line {number} is not JSON."
        ) from None
    problem = None
    if not isinstance(record, dict):
        problem = "is not an object"
    elif not isinstance(record.get("key"), str) or not record["key"].startswith(KEY_PREFIX):
        problem = f"has no key under {KEY_PREFIX}"
    elif record.get("type") != "string" or not isinstance(record.get("value"), str):
        problem = "is not a string key with a value"
    elif record.get("pttl") is not None and (
        not isinstance(record["pttl"], int) or isinstance(record["pttl"], bool)
        or record["pttl"] < 1
    ):
        problem = "has a pttl that is neither null nor a positive integer"
    if problem:
        raise MappingStoreError(f"Cannot restore from {src}: line {number} {problem}.")
    return record


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
