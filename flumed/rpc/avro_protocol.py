"""Flume's Avro RPC on the wire: the AvroSourceProtocol, Avro IPC handshake, Netty framing.

Everything here is pure (no I/O) so that it can be tested byte for byte against the
specification (Avro IPC, avro-ipc-netty's NettyTransportCodec, Flume's flume.avdl):

- `PROTOCOL_JSON` / `LOCAL_HASH`: the protocol text exactly as a Java peer renders it,
  and its MD5, which identifies the protocol in the handshake.
- Avro binary primitives (`encode_long`, `Reader`), the handshake records, and the
  fast encoder/decoder of event batches (`encode_events`, `Reader.read_events`).
- `encode_pack` / `PackDecoder`: Netty data packs (serial, buffer count, buffers).
- `ServerHandshake`: the responder's side of the handshake, with its protocol cache.

Every decoder checks lengths and counts against what is left of its input before it
allocates anything, and raises `ProtocolError` naming what was wrong.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flumed.event import Event
from flumed.rpc.errors import ProtocolError as ProtocolError
from flumed.rpc.errors import RemoteError as RemoteError

# -- the protocol ------------------------------------------------------------------------

#: flume.avdl opens with the Apache license comment, which Avro IDL makes the protocol's
#: `doc`. Avro <= 1.11.0 (every released Flume) keeps the comment body with its leading
#: " * "; the MD5 of the resulting JSON is what Java peers send (ref doc, section 1.2).
_LICENSE = (
    "Licensed to the Apache Software Foundation (ASF) under one\n"
    "or more contributor license agreements.  See the NOTICE file\n"
    "distributed with this work for additional information\n"
    "regarding copyright ownership.  The ASF licenses this file\n"
    "to you under the Apache License, Version 2.0 (the\n"
    '"License"); you may not use this file except in compliance\n'
    "with the License.  You may obtain a copy of the License at\n"
    "\n"
    "http://www.apache.org/licenses/LICENSE-2.0\n"
    "\n"
    "Unless required by applicable law or agreed to in writing,\n"
    "software distributed under the License is distributed on an\n"
    '"AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY\n'
    "KIND, either express or implied.  See the License for the\n"
    "specific language governing permissions and limitations\n"
    "under the License."
)


def _raw_doc(text: str) -> str:
    """The comment body as Avro <= 1.11.0 keeps it: ' * ' prefixes, then trimmed."""
    lines = [f" * {ln}" if ln else " *" for ln in text.split("\n")]
    return "\n".join(lines).strip()


_HEAD = '{"protocol":"AvroSourceProtocol","namespace":"org.apache.flume.source.avro",'
_TAIL = (
    '"types":[{"type":"enum","name":"Status","symbols":["OK","FAILED","UNKNOWN"]},'
    '{"type":"record","name":"AvroFlumeEvent","fields":[{"name":"headers","type":'
    '{"type":"map","values":"string"}},{"name":"body","type":"bytes"}]}],'
    '"messages":{"append":{"request":[{"name":"event","type":"AvroFlumeEvent"}],'
    '"response":"Status"},"appendBatch":{"request":[{"name":"events","type":'
    '{"type":"array","items":"AvroFlumeEvent"}}],"response":"Status"}}}'
)


def _with_doc(doc: str | None) -> str:
    if doc is None:
        return _HEAD + _TAIL
    return _HEAD + '"doc":' + json.dumps(doc, ensure_ascii=False) + "," + _TAIL


#: The protocol as Java's Protocol.toString() renders it for released Flume 1.x.
PROTOCOL_JSON: str = _with_doc(_raw_doc(_LICENSE))
PROTOCOL_BYTES: bytes = PROTOCOL_JSON.encode()
#: 86aadae2c45474c0fe93ffd0f2350a65: the hash flumed sends and answers with.
LOCAL_HASH: bytes = hashlib.md5(PROTOCOL_BYTES).digest()

#: Hashes of renderings of the same protocol, known without a protocol exchange:
#: released Flume (Avro <= 1.11.0), Flume master (Avro 1.11.1 strips the comment's " * "),
#: no doc at all, and the Python `avro` package's str(protocol).
KNOWN_HASHES: dict[bytes, str] = {
    LOCAL_HASH: "Flume 1.x (Avro <= 1.11.0)",
    hashlib.md5(_with_doc(_LICENSE).encode()).digest(): "Flume master (Avro 1.11.1)",
    hashlib.md5(_with_doc(None).encode()).digest(): "no doc",
    bytes.fromhex("707cba5ff90563725bf99ecb99ba0028"): "Python avro package",
}

#: A client's protocol text longer than this is refused (ours is 1334 bytes).
MAX_PROTOCOL_TEXT = 1 << 20


class Status(enum.IntEnum):
    """The `Status` enum of AvroSourceProtocol (enum index on the wire)."""

    OK = 0
    FAILED = 1
    UNKNOWN = 2


class Match(enum.IntEnum):
    """The `HandshakeMatch` enum of org.apache.avro.ipc."""

    BOTH = 0
    CLIENT = 1
    NONE = 2


class LimitExceeded(ProtocolError):
    """Well-formed input over a configured limit: refused, the connection may go on."""


# -- Avro binary primitives ----------------------------------------------------------------


def encode_long(n: int) -> bytes:
    """Avro `int`/`long`: zig-zag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL: list[bytes] = [bytes((i,)) for i in range(0x80)]
#: Encoded lengths 0..8191 (one or two bytes), the usual sizes of bodies and headers.
_LEN: list[bytes] = []
for _i in range(1 << 13):
    _z = _i << 1
    _LEN.append(bytes((_z,)) if _z < 0x80 else bytes(((_z & 0x7F) | 0x80, _z >> 7)))
del _i, _z


def encode_string(s: str) -> bytes:
    b = s.encode()
    return encode_long(len(b)) + b


def encode_bytes(b: bytes) -> bytes:
    return encode_long(len(b)) + b


def encode_map_bytes(m: dict[str, bytes] | None) -> bytes:
    """An Avro `map<bytes>` (request/response metadata)."""
    if not m:
        return b"\x00"
    parts = [encode_long(len(m))]
    for k, v in m.items():
        parts += (encode_string(k), encode_bytes(v))
    parts.append(b"\x00")
    return b"".join(parts)


def encode_events(events: Sequence[Event]) -> bytes:
    """An Avro `array<AvroFlumeEvent>`: one block of all events, then the end marker."""
    if not events:
        return b"\x00"
    lens = _LEN
    nlens = len(lens)
    parts: list[bytes] = [encode_long(len(events))]
    append = parts.append
    for e in events:
        h = e.headers
        if h:
            append(encode_long(len(h)))
            for k, v in h.items():
                kb = k.encode()
                vb = v.encode()
                append(lens[len(kb)] if len(kb) < nlens else encode_long(len(kb)))
                append(kb)
                append(lens[len(vb)] if len(vb) < nlens else encode_long(len(vb)))
                append(vb)
        append(b"\x00")
        body = e.body
        n = len(body)
        append(lens[n] if n < nlens else encode_long(n))
        append(body)
    append(b"\x00")
    return b"".join(parts)


def encode_event(e: Event) -> bytes:
    """One `AvroFlumeEvent` record (the parameter of `append`)."""
    # The array of one is: count 1 (one byte), the record, end marker 0.
    return encode_events([e])[1:-1]


class Reader:
    """Reads Avro binary from one bytes object, checking every length against the input.

    Raises ProtocolError on truncated or malformed input.

    Hand-tuned on purpose: `read_long` is Avro's zig-zag varint (it looks like the
    Thrift compact varint of rpc/thrift_protocol.py, a different encoding), and
    `read_map_bytes` / `read_string_map` stay two small loops, each called per request.
    """

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def read_long(self) -> int:
        buf = self.buf
        pos = self.pos
        n = 0
        shift = 0
        try:
            while True:
                b = buf[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise ProtocolError("Avro varint longer than 10 bytes")
        except IndexError:
            raise ProtocolError("truncated Avro varint") from None
        self.pos = pos
        return (n >> 1) ^ -(n & 1)

    def read_raw(self, n: int) -> bytes:
        if n < 0 or n > len(self.buf) - self.pos:
            raise ProtocolError(f"length {n} exceeds the {self.remaining} bytes left")
        start = self.pos
        self.pos = start + n
        return self.buf[start : self.pos]

    def read_bytes(self) -> bytes:
        return self.read_raw(self.read_long())

    def read_string(self) -> str:
        # Java decodes malformed UTF-8 with replacement characters; so do we.
        return self.read_bytes().decode("utf-8", "replace")

    def read_boolean(self) -> bool:
        b = self.read_raw(1)[0]
        if b > 1:
            raise ProtocolError(f"boolean byte {b} is neither 0 nor 1")
        return b == 1

    def read_union_index(self, branches: int) -> int:
        i = self.read_long()
        if not 0 <= i < branches:
            raise ProtocolError(f"union branch {i} out of range 0..{branches - 1}")
        return i

    def read_enum(self, cls: type[enum.IntEnum]) -> Any:
        i = self.read_long()
        try:
            return cls(i)
        except ValueError:
            raise ProtocolError(f"{cls.__name__} index {i} out of range") from None

    def _block_count(self, item_min: int) -> int:
        """A map/array block count; a negative count is followed by a byte size."""
        n = self.read_long()
        if n < 0:
            n = -n
            self.read_long()
        if n * item_min > len(self.buf) - self.pos:
            raise ProtocolError(f"block of {n} items exceeds the {self.remaining} bytes left")
        return n

    def read_map_bytes(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        while n := self._block_count(2):
            for _ in range(n):
                k = self.read_string()
                out[k] = self.read_bytes()
        return out

    def read_string_map(self, max_entries: int | None = None) -> dict[str, str]:
        """A map<string>. Raises LimitExceeded past `max_entries` (from the block counts,
        before the entries are decoded)."""
        out: dict[str, str] = {}
        while n := self._block_count(2):
            if max_entries is not None and len(out) + n > max_entries:
                raise LimitExceeded(
                    f"an event with at least {len(out) + n} headers exceeds the limit of "
                    f"{max_entries} (max-event-headers)"
                )
            for _ in range(n):
                k = self.read_string()
                out[k] = self.read_string()
        return out

    def read_event(self, max_headers: int | None = None) -> Event:
        headers = self.read_string_map(max_headers)
        return Event(self.read_bytes(), headers)

    def read_events(
        self,
        max_events: int | None = None,
        max_headers: int | None = None,
        max_batch_headers: int | None = None,
    ) -> list[Event]:
        """An `array<AvroFlumeEvent>`. The common shapes (short header strings, bodies
        under 8 KiB) are decoded inline; anything else goes through the general readers,
        which check everything.

        Raises:
            LimitExceeded: the array holds more than `max_events` (checked from the
                block counts, before the events are decoded), an event more than
                `max_headers` headers, or the events together more than
                `max_batch_headers` (checked as they are decoded).
        """
        buf = self.buf
        end = len(buf)
        out: list[Event] = []
        append = out.append
        total_headers = 0
        while n := self._block_count(2):
            if max_events is not None and len(out) + n > max_events:
                raise LimitExceeded(
                    f"appendBatch of at least {len(out) + n} events exceeds the limit of "
                    f"{max_events} (max-batch-events)"
                )
            pos = self.pos
            for _ in range(n):
                if pos >= end:
                    raise ProtocolError("truncated event array")
                b = buf[pos]
                if b == 0:  # the usual empty header map
                    pos += 1
                    headers: dict[str, str] = {}
                else:
                    headers, pos = self._read_headers(pos, max_headers)
                    if max_batch_headers is not None:
                        total_headers += len(headers)
                        if total_headers > max_batch_headers:
                            raise LimitExceeded(
                                f"appendBatch with more than {max_batch_headers} headers in "
                                "all exceeds the limit (max-batch-headers)"
                            )
                # body length: one- and two-byte varints inline (z: zig-zag value).
                b = buf[pos] if pos < end else 0x80
                if b < 0x80:
                    z = b
                    pos += 1
                elif pos + 1 < end and buf[pos + 1] < 0x80:
                    z = (b & 0x7F) | (buf[pos + 1] << 7)
                    pos += 2
                else:
                    self.pos = pos
                    ln = self.read_long()
                    pos = self.pos
                    z = ln << 1 if ln >= 0 else 1
                if z & 1:
                    raise ProtocolError("negative body length")
                ln = z >> 1
                stop = pos + ln
                if stop > end:
                    raise ProtocolError(f"body length {ln} exceeds the {end - pos} bytes left")
                append(Event(buf[pos:stop], headers))
                pos = stop
            self.pos = pos
        return out

    def _read_headers(self, start: int, limit: int | None) -> tuple[dict[str, str], int]:
        """The header map at `start`: one block of short strings inline, else general."""
        buf = self.buf
        end = len(buf)
        pos = start
        cnt = buf[pos]
        headers: dict[str, str] = {}
        if cnt < 0x80 and not cnt & 1 and (limit is None or cnt >> 1 <= limit):
            pos += 1
            try:
                for _ in range(cnt >> 1):
                    kl = buf[pos]
                    if kl >= 0x80 or kl & 1:
                        break
                    k = buf[pos + 1 : pos + 1 + (kl >> 1)]
                    pos += 1 + (kl >> 1)
                    vl = buf[pos]
                    if vl >= 0x80 or vl & 1:
                        break
                    v = buf[pos + 1 : pos + 1 + (vl >> 1)]
                    pos += 1 + (vl >> 1)
                    if pos > end:
                        break
                    headers[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
                else:
                    if pos < end and buf[pos] == 0:  # one block, then the end marker
                        return headers, pos + 1
            except IndexError:
                pass
        self.pos = start
        headers = self.read_string_map(limit)
        return headers, self.pos


# -- handshake records -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """org.apache.avro.ipc.HandshakeRequest (field order is the wire order)."""

    client_hash: bytes
    client_protocol: str | None
    server_hash: bytes
    meta: dict[str, bytes] | None = None

    def encode(self) -> bytes:
        parts = [self.client_hash]
        if self.client_protocol is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", encode_string(self.client_protocol))
        parts.append(self.server_hash)
        if self.meta is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", encode_map_bytes(self.meta))
        return b"".join(parts)

    @classmethod
    def read(cls, r: Reader) -> HandshakeRequest:
        client_hash = r.read_raw(16)
        proto = None
        if r.read_union_index(2):
            n = r.read_long()
            if n > MAX_PROTOCOL_TEXT:
                raise ProtocolError(f"client protocol text of {n} bytes is too long")
            proto = r.read_raw(n).decode("utf-8", "replace")
        server_hash = r.read_raw(16)
        meta = r.read_map_bytes() if r.read_union_index(2) else None
        return cls(client_hash, proto, server_hash, meta)


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """org.apache.avro.ipc.HandshakeResponse (field order is the wire order)."""

    match: Match
    server_protocol: str | None = None
    server_hash: bytes | None = None
    meta: dict[str, bytes] | None = None

    def encode(self) -> bytes:
        parts = [encode_long(self.match)]
        if self.server_protocol is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", encode_string(self.server_protocol))
        if self.server_hash is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", self.server_hash)
        if self.meta is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x02", encode_map_bytes(self.meta))
        return b"".join(parts)

    @classmethod
    def read(cls, r: Reader) -> HandshakeResponse:
        match = r.read_enum(Match)
        proto = None
        if r.read_union_index(2):
            n = r.read_long()
            if n > MAX_PROTOCOL_TEXT:
                raise ProtocolError(f"server protocol text of {n} bytes is too long")
            proto = r.read_raw(n).decode("utf-8", "replace")
        server_hash = r.read_raw(16) if r.read_union_index(2) else None
        meta = r.read_map_bytes() if r.read_union_index(2) else None
        return cls(match, proto, server_hash, meta)


# -- calls -------------------------------------------------------------------------------

_APPEND_BATCH = b"\x00" + encode_string("appendBatch")
_APPEND = b"\x00" + encode_string("append")


def encode_append_batch(events: Sequence[Event], handshake: bytes = b"") -> bytes:
    """A call request: [handshake], empty meta, "appendBatch", the event array."""
    return handshake + _APPEND_BATCH + encode_events(events)


def encode_append(event: Event, handshake: bytes = b"") -> bytes:
    return handshake + _APPEND + encode_event(event)


def encode_status_response(status: Status, handshake: bytes = b"") -> bytes:
    """A call response: [handshake], empty meta, no-error flag, the Status."""
    return handshake + b"\x00\x00" + encode_long(status)


def encode_error_response(message: str, handshake: bytes = b"") -> bytes:
    """An error response: [handshake], empty meta, error flag, union branch 0 (string)."""
    return handshake + b"\x00\x01\x00" + encode_string(message)


def read_status_response(r: Reader) -> Status:
    """Meta, error flag, then Status. Raises RemoteError for an error response."""
    r.read_map_bytes()
    if r.read_boolean():
        r.read_union_index(1)
        raise RemoteError(r.read_string())
    status: Status = r.read_enum(Status)
    return status


# -- protocol compatibility --------------------------------------------------------------

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _shape(schema: Any, named: dict[str, Any], depth: int = 0) -> Any:
    """A comparable shape of a schema: names without namespaces, docs and order ignored
    where Avro ignores them. Named references are expanded (bounded depth)."""
    if depth > 16:
        raise ValueError("schema nested too deeply")
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        short = schema.rsplit(".", 1)[-1]
        if short not in named:
            raise ValueError(f"unknown type {schema!r}")
        return _shape(named[short], named, depth + 1)
    if isinstance(schema, list):
        return ("union", tuple(_shape(s, named, depth + 1) for s in schema))
    if not isinstance(schema, dict):
        raise ValueError(f"bad schema {schema!r}")
    t = schema.get("type")
    if t in ("record", "error"):
        fields = tuple(
            (f["name"], _shape(f["type"], named, depth + 1)) for f in schema.get("fields", ())
        )
        return ("record", str(schema.get("name", "")).rsplit(".", 1)[-1], fields)
    if t == "enum":
        return ("enum", tuple(schema.get("symbols", ())))
    if t == "array":
        return ("array", _shape(schema.get("items"), named, depth + 1))
    if t == "map":
        return ("map", _shape(schema.get("values"), named, depth + 1))
    if t == "fixed":
        return ("fixed", schema.get("size"))
    return _shape(t, named, depth + 1)


def _collect(schema: Any, named: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for s in schema:
            _collect(s, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "error", "enum", "fixed") and "name" in schema:
            named[str(schema["name"]).rsplit(".", 1)[-1]] = schema
        for f in schema.get("fields", ()) if isinstance(schema.get("fields"), list) else ():
            if isinstance(f, dict):
                _collect(f.get("type"), named)
        for k in ("items", "values"):
            if k in schema:
                _collect(schema[k], named)


def _messages(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), dict):
        raise ValueError("not an Avro protocol")
    named: dict[str, Any] = {}
    for t in doc.get("types", ()) or ():
        _collect(t, named)
    out = {}
    for name, m in doc["messages"].items():
        req = tuple(_shape(p["type"], named) for p in m.get("request", ()))
        out[name] = (req, _shape(m.get("response", "null"), named))
    return out


_OUR_MESSAGES = _messages(json.loads(PROTOCOL_JSON))


def compatibility_problem(text: str) -> str | None:
    """None when the protocol text `text` declares messages we can serve or call (a
    subset of AvroSourceProtocol with the same shapes); otherwise what is wrong."""
    try:
        theirs = _messages(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return f"unreadable protocol: {e}"
    except RecursionError:
        return "unreadable protocol: nested too deeply"
    if not theirs:
        return "the protocol declares no messages"
    for name, shape in theirs.items():
        if name not in _OUR_MESSAGES:
            return f"unknown message {name!r}"
        if shape != _OUR_MESSAGES[name]:
            return f"message {name!r} has different types than AvroSourceProtocol's"
    return None


class ServerHandshake:
    """The responder's handshake (Java Responder.handshake), shared by a source's
    connections. Known client hashes are cached, bounded; the cache starts with the
    renderings of AvroSourceProtocol that Java and Python peers send."""

    MAX_CACHE = 256

    def __init__(self) -> None:
        self.known: set[bytes] = set(KNOWN_HASHES)

    def respond(self, req: HandshakeRequest) -> HandshakeResponse:
        """The response to `req`; match NONE means the call is not executed.

        Raises:
            ProtocolError: the client's protocol text is not one we can serve.
        """
        known = req.client_hash in self.known
        if not known and req.client_protocol is not None:
            problem = compatibility_problem(req.client_protocol)
            if problem is not None:
                raise ProtocolError(f"client protocol is not AvroSourceProtocol: {problem}")
            if len(self.known) < self.MAX_CACHE:
                self.known.add(req.client_hash)
            known = True
        if not known:
            match = Match.NONE
        elif req.server_hash == LOCAL_HASH:
            return HandshakeResponse(Match.BOTH)
        else:
            match = Match.CLIENT
        return HandshakeResponse(match, PROTOCOL_JSON, LOCAL_HASH)


# -- Netty framing -----------------------------------------------------------------------

_HDR = struct.Struct(">ii")
_HDR1 = struct.Struct(">iii")
_LEN32 = struct.Struct(">i")

#: Default largest pack accepted (header, buffer lengths and payload together).
#: Flume sets none (Netty refuses a count*8 over 10% of the heap); 64 MiB holds a
#: batch of 1,000 events of 64 KiB.
DEFAULT_MAX_PACK = 64 << 20


def encode_pack(serial: int, payload: bytes) -> bytes:
    """One Netty data pack of one buffer (count 1, never 0)."""
    return _HDR1.pack(serial, 1, len(payload)) + payload


def pack_header(serial: int, payload_len: int) -> bytes:
    """The 12 bytes that precede `payload` in `encode_pack` (to write without copying)."""
    return _HDR1.pack(serial, 1, payload_len)


class PackDecoder:
    """Splits a byte stream into Netty data packs: `feed()` returns complete
    (serial, payload) pairs, payload being the concatenation of the pack's buffers.

    Limits are checked from the headers before the payload is read.

    Raises:
        ProtocolError: a negative or zero buffer count, a negative length, or a pack
            larger than `max_pack` bytes.
    """

    __slots__ = ("_buf", "_count", "_left", "_need", "_parts", "_serial", "_size", "max_pack")

    def __init__(self, max_pack: int = DEFAULT_MAX_PACK) -> None:
        self.max_pack = max_pack
        self._buf = bytearray()
        self._serial = 0
        self._count = -1  # -1: waiting for a pack header
        self._left = 0  # buffers still to read in this pack
        self._need = 8
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def partial(self) -> bool:
        """True while part of a pack is buffered (a peer that stops here is stuck)."""
        return bool(self._buf) or self._count >= 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        if len(buf) < self._need:  # the bytes still missing for the next step
            return []
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        max_pack = self.max_pack
        while True:
            if self._count < 0:
                if end - pos < 8:
                    self._need = 8
                    break
                serial, count = _HDR.unpack_from(buf, pos)
                if count <= 0:
                    raise ProtocolError(f"pack with buffer count {count}")
                if 8 + 4 * count > max_pack:
                    raise ProtocolError(
                        f"pack of {count} buffers exceeds the {max_pack}-byte frame limit"
                    )
                pos += 8
                self._serial, self._count, self._left = serial, count, count
                self._size = 8 + 4 * count
                # The usual pack: one buffer, wholly here. Slice it out at once.
                if count == 1 and end - pos >= 4:
                    (ln,) = _LEN32.unpack_from(buf, pos)
                    if 0 <= ln <= max_pack - 12 and end - pos - 4 >= ln:
                        out.append((serial, bytes(buf[pos + 4 : pos + 4 + ln])))
                        pos += 4 + ln
                        self._count = -1
                        continue
            if end - pos < 4:
                self._need = 4
                break
            (ln,) = _LEN32.unpack_from(buf, pos)
            if ln < 0:
                raise ProtocolError(f"pack buffer with length {ln}")
            if self._size + ln > max_pack:
                raise ProtocolError(
                    f"pack of at least {self._size + ln} bytes exceeds the "
                    f"{max_pack}-byte frame limit"
                )
            if end - pos - 4 < ln:
                self._need = 4 + ln
                break
            self._parts.append(bytes(buf[pos + 4 : pos + 4 + ln]))
            self._size += ln
            pos += 4 + ln
            self._left -= 1
            if self._left == 0:
                parts = self._parts
                out.append((self._serial, parts[0] if len(parts) == 1 else b"".join(parts)))
                self._parts = []
                self._count = -1
        if pos:
            del buf[:pos]
        return out
