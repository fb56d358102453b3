#!/usr/bin/env python3
"""A local stand-in for the Anthropic Messages API, used by the test suite.

The gateway under test forwards masked requests here instead of to api.anthropic.com. The stub
answers like the real API (JSON and SSE), echoing the text of the last user message so tests can
see tokens go out and originals come back, and it keeps every request it received so tests can
check what the gateway actually forwarded. Standard library only: it runs on hosts that have
nothing but python3.

Endpoints
  POST   /v1/messages                 message, or an SSE stream with "stream": true
  POST   /v1/messages/count_tokens    {"input_tokens": N}
  POST   /v1/messages/batches         a message batch object (nothing is processed)
  GET    /health                      {"status": "healthy"}
  GET    /__stub/received[?limit=N]   recorded requests, oldest first, newest last
  DELETE /__stub/received             forget the recorded requests (the record file is kept)
  anything else                       404 not_found_error

Request headers that steer an answer (all optional)
  x-stub-status: N            answer with an Anthropic-shaped error of status N (400-599)
  x-stub-delay-ms: N          wait N ms before answering
  x-stub-reply: "json str"    reply with this text instead of the echo (a JSON-encoded string,
                              so any unicode fits in a header)
  x-stub-tool-use: 1          reply with a tool_use block whose input is {"text": <reply text>}
  x-stub-tool-input: {json}   reply with a tool_use block with exactly this input object
  x-stub-delta-size: N        characters per text_delta / input_json_delta (default 12)
  x-stub-chunk-size: N        write the response body in N-byte writes, each flushed on its
                              own, so events, tokens and UTF-8 characters split at any byte
  x-stub-chunk-delay-ms: N    pause between those writes (default 1, so they reach the peer
                              as separate reads rather than coalesced)
  x-stub-content-encoding: C  compress the answer with C whatever Accept-Encoding says, as an
                              upstream may: gzip, x-gzip, deflate (zlib-wrapped, RFC 1950),
                              deflate-raw (sent as "deflate", raw deflate data, as some servers
                              do) or identity
  x-stub-gzip-members: 1      with gzip: every SSE event, and each half of a JSON answer, is a
                              gzip member of its own (RFC 1952 allows several in a row)
  x-stub-encoding-fault: F    break the compressed answer: "corrupt" makes a deflate block
                              invalid (the middle event of a stream, the start of a JSON body),
                              "truncate" leaves out the end of the compressed data while the
                              HTTP framing stays whole

Otherwise the answer is gzip-encoded when the request's Accept-Encoding accepts gzip, as the
real API does; a client that wants plain bytes sends no Accept-Encoding or "identity".

Control paths (/health, /__stub/...) are not recorded. Secrets in recorded headers (x-api-key,
authorization, ...) are replaced by a short SHA-256 fingerprint, so a test can tell which
credential arrived without the record holding it.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import math
import os
import secrets
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8099
DEFAULT_DELTA_SIZE = 12
DEFAULT_CHUNK_DELAY_MS = 1
DEFAULT_MEMORY_LIMIT = 2000
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_DELAY_MS = 600_000

# Content codings the stub can write: the name it sends and zlib's window bits for it.
CONTENT_ENCODINGS = {
    "gzip": ("gzip", 16 + zlib.MAX_WBITS),
    "x-gzip": ("x-gzip", 16 + zlib.MAX_WBITS),
    "deflate": ("deflate", zlib.MAX_WBITS),
    "deflate-raw": ("deflate", -zlib.MAX_WBITS),
}
# Bytes before the deflate data of each wrapper (gzip header without options, zlib header).
WRAPPER_HEADER_BYTES = {16 + zlib.MAX_WBITS: 10, zlib.MAX_WBITS: 2, -zlib.MAX_WBITS: 0}
ENCODING_FAULTS = ("corrupt", "truncate")
# A deflate block header with the reserved block type 3: every decoder rejects it.
INVALID_BLOCK = b"\xff"

SECRET_HEADERS = frozenset(
    {"x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie"}
)

# The error type the real API uses for each status; anything else falls back by class.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

NO_TEXT_REPLY = "(stub: the last user message has no text)"

# Reason phrases http.server does not know.
EXTRA_REASONS = {529: "Overloaded"}


class StubRequestError(Exception):
    """A request the stub answers with an Anthropic-shaped error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": error_type_for(status), "message": message}}


def new_id(prefix: str) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _position in range(24))


def rfc3339(epoch: float | None = None) -> str:
    """A UTC timestamp with milliseconds, as the API writes them ("2025-01-31T12:00:00.000Z")."""
    epoch = time.time() if epoch is None else epoch
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


def estimate_tokens(text: str) -> int:
    """Roughly four characters per token, never zero: plausible numbers, not a tokenizer."""
    return max(1, math.ceil(len(text) / 4))


# --- Reading a Messages API request ---------------------------------------------------------


def block_text(block: Any) -> str:
    """The text a user would see in one content block, tool results included."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return block["text"]
    if block.get("type") == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return "".join(block_text(part) for part in content)
        return content if isinstance(content, str) else ""
    return ""


def content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(block_text(block) for block in content)
    return block_text(content)


def last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def request_text(payload: dict) -> str:
    """All text of a request, for the token estimates."""
    parts = [content_text(payload.get("system"))]
    for message in payload.get("messages") or []:
        if isinstance(message, dict):
            parts.append(content_text(message.get("content")))
    if payload.get("tools"):
        parts.append(json.dumps(payload["tools"]))
    return "".join(parts)


def require_json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StubRequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise StubRequestError(400, "request body must be a JSON object")
    return payload


def validate_messages(payload: dict, need_max_tokens: bool = True) -> None:
    """The shape checks every Messages request gets, worded like the real API."""
    model = payload.get("model")
    if model is None:
        raise StubRequestError(400, "model: Field required")
    if not isinstance(model, str) or not model:
        raise StubRequestError(400, "model: Input should be a non-empty string")

    if need_max_tokens:
        max_tokens = payload.get("max_tokens")
        if max_tokens is None:
            raise StubRequestError(400, "max_tokens: Field required")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise StubRequestError(400, "max_tokens: Input should be an integer of at least 1")

    messages = payload.get("messages")
    if messages is None:
        raise StubRequestError(400, "messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise StubRequestError(400, "messages: Input should be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise StubRequestError(400, f"messages.{index}: Input should be an object")
        if message.get("role") not in ("user", "assistant"):
            raise StubRequestError(
                400, f"messages.{index}.role: Input should be 'user' or 'assistant'"
            )
        if not isinstance(message.get("content"), (str, list)):
            raise StubRequestError(
                400, f"messages.{index}.content: Input should be a string or a list of blocks"
            )

    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise StubRequestError(400, "stream: Input should be a boolean")


# --- What the test asked for ----------------------------------------------------------------


@dataclass
class Behaviour:
    """The x-stub-* headers of one request, parsed and checked."""

    status: int | None = None
    delay_ms: int = 0
    reply: str | None = None
    tool_use: bool = False
    tool_input: dict | None = None
    delta_size: int = DEFAULT_DELTA_SIZE
    chunk_size: int = 0
    chunk_delay_ms: int = DEFAULT_CHUNK_DELAY_MS
    content_encoding: str | None = None
    gzip_members: bool = False
    encoding_fault: str | None = None

    @classmethod
    def from_headers(cls, headers) -> Behaviour:
        behaviour = cls()
        behaviour.status = header_int(headers, "x-stub-status", 400, 599)
        behaviour.delay_ms = header_int(headers, "x-stub-delay-ms", 0, MAX_DELAY_MS) or 0
        behaviour.delta_size = (
            header_int(headers, "x-stub-delta-size", 1, 1 << 20) or DEFAULT_DELTA_SIZE
        )
        behaviour.chunk_size = header_int(headers, "x-stub-chunk-size", 1, 1 << 20) or 0
        chunk_delay = header_int(headers, "x-stub-chunk-delay-ms", 0, 10_000)
        if chunk_delay is not None:
            behaviour.chunk_delay_ms = chunk_delay

        raw_reply = headers.get("x-stub-reply")
        if raw_reply is not None:
            reply = header_json(raw_reply, "x-stub-reply")
            if not isinstance(reply, str):
                raise StubRequestError(400, "x-stub-reply must be a JSON-encoded string")
            behaviour.reply = reply

        raw_input = headers.get("x-stub-tool-input")
        if raw_input is not None:
            tool_input = header_json(raw_input, "x-stub-tool-input")
            if not isinstance(tool_input, dict):
                raise StubRequestError(400, "x-stub-tool-input must be a JSON object")
            behaviour.tool_input = tool_input

        flag = (headers.get("x-stub-tool-use") or "").strip().lower()
        behaviour.tool_use = flag in ("1", "true", "yes") or behaviour.tool_input is not None
        behaviour.read_encoding(headers)
        return behaviour

    def read_encoding(self, headers) -> None:
        encoding = (headers.get("x-stub-content-encoding") or "").strip().lower()
        if encoding and encoding != "identity":
            if encoding not in CONTENT_ENCODINGS:
                raise StubRequestError(400, "x-stub-content-encoding must be one of "
                                       + ", ".join(["identity", *CONTENT_ENCODINGS]))
            self.content_encoding = encoding
        self.gzip_members = (headers.get("x-stub-gzip-members") or "").strip() == "1"
        if self.gzip_members and CONTENT_ENCODINGS.get(encoding, ("",))[0] not in (
                "gzip", "x-gzip"):
            raise StubRequestError(400, "x-stub-gzip-members needs a gzip content encoding")
        fault = (headers.get("x-stub-encoding-fault") or "").strip().lower()
        if fault:
            if fault not in ENCODING_FAULTS:
                raise StubRequestError(400, "x-stub-encoding-fault must be one of "
                                       + ", ".join(ENCODING_FAULTS))
            if not self.content_encoding:
                raise StubRequestError(400, "x-stub-encoding-fault needs "
                                       "x-stub-content-encoding")
            self.encoding_fault = fault


def header_int(headers, name: str, low: int, high: int) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise StubRequestError(400, f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise StubRequestError(400, f"{name} must be between {low} and {high}, got {value}")
    return value


def header_json(raw: str, name: str) -> Any:
    try:
        # http.server decodes header bytes as latin-1; undo that so raw UTF-8 works too.
        return json.loads(raw.encode("latin-1").decode("utf-8"))
    except (UnicodeError, ValueError) as exc:
        raise StubRequestError(400, f"{name} is not valid JSON: {exc}") from None


# --- Building answers -----------------------------------------------------------------------


def tool_name(payload: dict) -> str:
    for tool in payload.get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            return tool["name"]
    return "echo"


def pieces(text: str, size: int) -> list[str]:
    return [text[start:start + size] for start in range(0, len(text), size)] or [""]


@dataclass
class Answer:
    """What one Messages request is answered with, before it becomes JSON or SSE."""

    model: str
    reply: str
    input_tokens: int
    tool_input: dict | None = None
    tool_name: str = "echo"

    def __post_init__(self):
        self.message_id = new_id("msg_")
        self.tool_use_id = new_id("toolu_")

    @property
    def output_tokens(self) -> int:
        if self.tool_input is not None:
            return estimate_tokens(json.dumps(self.tool_input))
        return estimate_tokens(self.reply)

    @property
    def stop_reason(self) -> str:
        return "tool_use" if self.tool_input is not None else "end_turn"

    def usage(self, output_tokens: int) -> dict:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        }

    def message(self) -> dict:
        if self.tool_input is not None:
            block = {
                "type": "tool_use",
                "id": self.tool_use_id,
                "name": self.tool_name,
                "input": self.tool_input,
            }
        else:
            block = {"type": "text", "text": self.reply}
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [block],
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage(self.output_tokens),
        }

    def events(self, delta_size: int) -> Iterator[tuple[str, dict]]:
        """The event sequence of the real API for a one-block answer."""
        start = self.message()
        start.update(content=[], stop_reason=None, usage=self.usage(1))
        yield "message_start", {"type": "message_start", "message": start}

        if self.tool_input is not None:
            opening = {"type": "tool_use", "id": self.tool_use_id, "name": self.tool_name,
                       "input": {}}
            # The real API opens a tool input with an empty fragment; gateways meet it too.
            fragments = ["", *pieces(json.dumps(self.tool_input, ensure_ascii=False),
                                     delta_size)]
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in fragments]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": part}
                      for part in pieces(self.reply, delta_size)]

        yield "content_block_start", {
            "type": "content_block_start", "index": 0, "content_block": opening,
        }
        yield "ping", {"type": "ping"}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
        yield "message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": self.output_tokens},
        }
        yield "message_stop", {"type": "message_stop"}


def compact_json(document: Any) -> str:
    """JSON the way the real API writes it: no spaces, unicode as is."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def sse_event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {compact_json(data)}\n\n".encode()


def batch_object(payload: dict) -> dict:
    requests = payload.get("requests")
    if not isinstance(requests, list) or not requests:
        raise StubRequestError(400, "requests: Input should be a non-empty list")
    for index, item in enumerate(requests):
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            raise StubRequestError(400, f"requests.{index}.custom_id: Field required")
        params = item.get("params")
        if not isinstance(params, dict):
            raise StubRequestError(400, f"requests.{index}.params: Field required")
        try:
            validate_messages(params)
        except StubRequestError as exc:
            raise StubRequestError(400, f"requests.{index}.params.{exc.message}") from None

    created = time.time()
    return {
        "id": new_id("msgbatch_"),
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                           "canceled": 0, "expired": 0},
        "ended_at": None,
        "created_at": rfc3339(created),
        "expires_at": rfc3339(created + 24 * 3600),
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
    }


# --- Writing answers ------------------------------------------------------------------------


def compressed(data: bytes, window: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, window)
    return compressor.compress(data) + compressor.flush()


def encode_body(body: bytes, behaviour: Behaviour) -> bytes:
    """A whole body in the content coding (and with the fault) the test asked for."""
    window = CONTENT_ENCODINGS[behaviour.content_encoding][1]
    if behaviour.gzip_members:
        middle = len(body) // 2
        data = compressed(body[:middle], window) + compressed(body[middle:], window)
    else:
        data = compressed(body, window)
    if behaviour.encoding_fault == "truncate":
        return data[:-4]
    if behaviour.encoding_fault == "corrupt":
        at = WRAPPER_HEADER_BYTES[window]
        return data[:at] + INVALID_BLOCK + data[at + 1:]
    return data


class BodyWriter:
    """Writes a response body, optionally in fixed-size flushed pieces and compressed.

    With a chunk size, bytes are held until a full piece is ready, so piece boundaries fall at
    arbitrary offsets of the events (and of multi-byte characters) rather than between them.
    A compressed stream is flushed at every event (or, with gzip_members, every event is a
    gzip member), so each event can be decoded as soon as it arrives. corrupt_write: the
    ordinal of the write whose compressed bytes start with an invalid deflate block;
    truncate: the end of the compressed data (its final flush) is never sent.
    """

    def __init__(self, wfile, chunk_size: int, chunk_delay_ms: int, chunked: bool,
                 window: int | None = None, gzip_members: bool = False,
                 corrupt_write: int = 0, truncate: bool = False):
        self.wfile = wfile
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay_ms / 1000.0
        self.chunked = chunked
        self.window = window
        self.gzip_members = gzip_members
        self.compressor = (zlib.compressobj(6, zlib.DEFLATED, window)
                           if window is not None and not gzip_members else None)
        self.corrupt_write = corrupt_write
        self.truncate = truncate
        self.writes = 0
        self.pending = b""
        self.written = 0
        self.pieces = 0

    def write(self, data: bytes, flush_event: bool = False) -> None:
        self.writes += 1
        if self.gzip_members:
            data = compressed(data, self.window)
        elif self.compressor is not None:
            data = self.compressor.compress(data)
            if flush_event:
                data += self.compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.writes == self.corrupt_write and data:
            data = INVALID_BLOCK + data[1:]
        if not self.chunk_size:
            self._send(data)
            return
        self.pending += data
        while len(self.pending) >= self.chunk_size:
            piece, self.pending = self.pending[:self.chunk_size], self.pending[self.chunk_size:]
            self._send(piece)

    def close(self) -> None:
        if self.compressor is not None:
            tail = self.compressor.flush(zlib.Z_FINISH)
            if not self.truncate:
                self.pending += tail
        elif self.gzip_members and self.truncate:
            self.pending = self.pending[:-4]
        while self.pending:
            size = self.chunk_size or len(self.pending)
            piece, self.pending = self.pending[:size], self.pending[size:]
            self._send(piece)
        if self.chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _send(self, piece: bytes) -> None:
        if not piece:
            return
        if self.pieces and self.chunk_size and self.chunk_delay:
            time.sleep(self.chunk_delay)
        if self.chunked:
            piece = b"%x\r\n%s\r\n" % (len(piece), piece)
        self.wfile.write(piece)
        self.wfile.flush()
        self.written += len(piece)
        self.pieces += 1


def accepts_gzip(accept_encoding: str | None) -> bool:
    for item in (accept_encoding or "").split(","):
        coding, _sep, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        quality = params.strip().lower()
        if not quality.startswith("q="):
            return True
        try:
            return float(quality[2:]) > 0
        except ValueError:
            return False
    return False


# --- What was received ----------------------------------------------------------------------


def fingerprint(secret: str) -> str:
    return "[redacted sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12] + "]"


class ReceivedLog:
    """Every request the stub received: in memory for /__stub/received, and in a JSONL file."""

    def __init__(self, record_file: str | None, memory_limit: int = DEFAULT_MEMORY_LIMIT):
        self.entries: collections.deque = collections.deque(maxlen=memory_limit)
        self.lock = threading.Lock()
        self.sequence = 0
        self.stream = None
        if record_file:
            directory = os.path.dirname(os.path.abspath(record_file))
            os.makedirs(directory, exist_ok=True)
            # Open for the server's lifetime; close() ends it.
            self.stream = open(record_file, "a", encoding="utf-8")  # noqa: SIM115 (see above)

    def add(self, method: str, target: str, headers, body: bytes) -> dict:
        parsed = urlsplit(target)
        recorded_headers: dict = {}
        for name, value in headers.items():
            name = name.lower()
            value = fingerprint(value) if name in SECRET_HEADERS else value
            if name in recorded_headers:
                recorded_headers[name] += ", " + value
            else:
                recorded_headers[name] = value
        entry = {
            "received_at": rfc3339(),
            "method": method,
            "path": parsed.path,
            "query": parsed.query,
            "headers": recorded_headers,
            "body_bytes": len(body),
        }
        try:
            entry["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            entry["body_base64"] = base64.b64encode(body).decode("ascii")

        with self.lock:
            self.sequence += 1
            entry = {"seq": self.sequence, **entry}
            self.entries.append(entry)
            if self.stream is not None:
                self.stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self.stream.flush()
        return entry

    def latest(self, limit: int | None) -> list:
        with self.lock:
            entries = list(self.entries)
        return entries if limit is None else entries[max(0, len(entries) - limit):]

    def clear(self) -> int:
        with self.lock:
            count = len(self.entries)
            self.entries.clear()
        return count

    def close(self) -> None:
        with self.lock:
            if self.stream is not None:
                self.stream.close()
                self.stream = None


# --- HTTP -----------------------------------------------------------------------------------


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, received: ReceivedLog, log_stream=None):
        self.received = received
        self.log_stream = log_stream if log_stream is not None else sys.stderr
        self.log_lock = threading.Lock()
        super().__init__(address, MessagesApiHandler)

    def log_line(self, **fields) -> None:
        line = " ".join(f"{key}={value}" for key, value in fields.items())
        with self.log_lock:
            print(f"{rfc3339()} anthropic_stub {line}", file=self.log_stream,
                  flush=True)


class MessagesApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubServer

    def version_string(self) -> str:
        return "anthropic-stub"

    def setup(self) -> None:
        super().setup()
        # Small writes must leave as separate segments, or chunking tests prove nothing.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, message_format, *args) -> None:
        """Silenced: one key=value line per request is written by handle_any instead."""

    def do_GET(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def do_DELETE(self) -> None:
        self.handle_any()

    def do_PUT(self) -> None:
        self.handle_any()

    def do_PATCH(self) -> None:
        self.handle_any()

    def handle_any(self) -> None:
        started = time.monotonic()
        self.outcome = {"status": 0, "bytes_out": 0, "stream": "false"}
        body = b""
        path = urlsplit(self.path).path
        try:
            body = self.read_body()
            if path == "/health" or path.startswith("/__stub/"):
                self.route_control(path)
            else:
                self.server.received.add(self.command, self.path, self.headers, body)
                self.route_api(path, body)
        except StubRequestError as exc:
            self.send_json(exc.status, error_body(exc.status, exc.message))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self.outcome["status"] = self.outcome["status"] or 499
        except Exception as exc:  # a stub bug still answers in the API's shape
            self.server.log_line(event="internal_error", error=type(exc).__name__)
            if self.outcome["status"]:
                # The answer has begun: cutting the connection is the only honest signal left.
                self.close_connection = True
            else:
                self.send_json(500, error_body(500, f"stub internal error: {type(exc).__name__}"))
        self.server.log_line(
            method=self.command,
            path=path,
            status=self.outcome["status"],
            stream=self.outcome["stream"],
            bytes_in=len(body),
            bytes_out=self.outcome["bytes_out"],
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            return self.read_chunked_body()
        length = self.headers.get("content-length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise StubRequestError(400, "content-length is not a number") from None
        if size > MAX_BODY_BYTES:
            self.close_connection = True
            raise StubRequestError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        return self.rfile.read(size)

    def read_chunked_body(self) -> bytes:
        parts = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise StubRequestError(400, "malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                raise StubRequestError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def route_control(self, path: str) -> None:
        if path == "/health" and self.command == "GET":
            self.send_json(200, {"status": "healthy"})
        elif path == "/__stub/received" and self.command == "GET":
            query = parse_qs(urlsplit(self.path).query)
            limit = None
            if "limit" in query:
                try:
                    limit = max(0, int(query["limit"][-1]))
                except ValueError:
                    raise StubRequestError(400, "limit must be an integer") from None
            self.send_json(200, self.server.received.latest(limit))
        elif path == "/__stub/received" and self.command == "DELETE":
            self.send_json(200, {"cleared": self.server.received.clear()})
        else:
            raise StubRequestError(404, f"no stub control endpoint {self.command} {path}")

    def route_api(self, path: str, body: bytes) -> None:
        routes = {
            "/v1/messages": self.create_message,
            "/v1/messages/count_tokens": self.count_tokens,
            "/v1/messages/batches": self.create_batch,
        }
        if self.command != "POST" or path not in routes:
            raise StubRequestError(404, f"Not found: {self.command} {path}")

        behaviour = Behaviour.from_headers(self.headers)
        if behaviour.delay_ms:
            time.sleep(behaviour.delay_ms / 1000.0)
        if behaviour.status is not None:
            raise StubRequestError(
                behaviour.status, f"stub error requested with x-stub-status: {behaviour.status}"
            )
        routes[path](require_json_object(body), behaviour)

    def create_message(self, payload: dict, behaviour: Behaviour) -> None:
        validate_messages(payload)
        reply = behaviour.reply
        if reply is None:
            reply = last_user_text(payload["messages"]) or NO_TEXT_REPLY
        tool_input = None
        if behaviour.tool_use:
            tool_input = behaviour.tool_input if behaviour.tool_input is not None else {
                "text": reply}
        answer = Answer(
            model=payload["model"],
            reply=reply,
            input_tokens=estimate_tokens(request_text(payload)),
            tool_input=tool_input,
            tool_name=tool_name(payload),
        )
        if payload.get("stream"):
            self.send_stream(answer, behaviour)
        else:
            self.send_json(200, answer.message(), behaviour)

    def count_tokens(self, payload: dict, behaviour: Behaviour) -> None:
        validate_messages(payload, need_max_tokens=False)
        self.send_json(200, {"input_tokens": estimate_tokens(request_text(payload))}, behaviour)

    def create_batch(self, payload: dict, behaviour: Behaviour) -> None:
        self.send_json(200, batch_object(payload), behaviour)

    def answer_encoding(self, behaviour: Behaviour) -> str | None:
        """The content coding of the answer: the one forced by the test, else gzip when the
        client accepts it."""
        if behaviour.content_encoding:
            return behaviour.content_encoding
        return "gzip" if accepts_gzip(self.headers.get("accept-encoding")) else None

    def start_response(self, status: int, content_type: str, encoding: str | None) -> None:
        self.send_response(status, EXTRA_REASONS.get(status))
        self.send_header("content-type", content_type)
        self.send_header("request-id", new_id("req_"))
        if encoding:
            self.send_header("content-encoding", CONTENT_ENCODINGS[encoding][0])
            self.send_header("vary", "accept-encoding")
        if status == 429 or status >= 500:
            self.send_header("x-should-retry", "true")
            self.send_header("retry-after", "0")

    def send_json(self, status: int, document: Any, behaviour: Behaviour | None = None) -> None:
        behaviour = behaviour or Behaviour()
        encoding = self.answer_encoding(behaviour)
        body = compact_json(document).encode("utf-8")
        if behaviour.content_encoding:
            body = encode_body(body, behaviour)
        elif encoding:
            body = compressed(body, CONTENT_ENCODINGS[encoding][1])

        self.start_response(status, "application/json", encoding)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        writer = BodyWriter(self.wfile, behaviour.chunk_size, behaviour.chunk_delay_ms,
                            chunked=False)
        writer.write(body)
        writer.close()
        self.outcome.update(status=status, bytes_out=writer.written)

    def send_stream(self, answer: Answer, behaviour: Behaviour) -> None:
        encoding = self.answer_encoding(behaviour)
        self.start_response(200, "text/event-stream; charset=utf-8", encoding)
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.outcome.update(status=200, stream="true")

        events = list(answer.events(behaviour.delta_size))
        writer = BodyWriter(self.wfile, behaviour.chunk_size, behaviour.chunk_delay_ms,
                            chunked=True,
                            window=CONTENT_ENCODINGS[encoding][1] if encoding else None,
                            gzip_members=behaviour.gzip_members,
                            corrupt_write=(len(events) // 2 + 1
                                           if behaviour.encoding_fault == "corrupt" else 0),
                            truncate=behaviour.encoding_fault == "truncate")
        try:
            for name, data in events:
                writer.write(sse_event(name, data), flush_event=True)
            writer.close()
        finally:
            self.outcome["bytes_out"] = writer.written


# --- Command line ---------------------------------------------------------------------------


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Local stand-in for the Anthropic Messages API, for gateway tests.")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port to listen on; 0 picks a free one (logged at start)")
    parser.add_argument("--record-file", default=None,
                        help="append every received request to this JSONL file")
    parser.add_argument("--memory-limit", type=int, default=DEFAULT_MEMORY_LIMIT,
                        help="requests kept in memory for /__stub/received (oldest dropped)")
    return parser.parse_args(argv)


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    received = ReceivedLog(args.record_file, args.memory_limit)
    server = StubServer((args.host, args.port), received)

    def stop(signum, _frame):
        server.log_line(event="stopping", signal=signal.Signals(signum).name)
        # shutdown() waits for serve_forever(), which runs in this very thread: hand it off.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.server_address[:2]
    server.log_line(event="listening", host=host, port=port,
                    record_file=args.record_file or "-")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        received.close()
    server.log_line(event="stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
