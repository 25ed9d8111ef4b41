"""Flume's Thrift RPC on the wire: `ThriftSourceProtocol` calls and replies.

The interface is `flume.thrift` (shipped next to this module): `append(ThriftFlumeEvent)`
and `appendBatch(list<ThriftFlumeEvent>)`, both answering a `Status` (OK, FAILED, ERROR,
UNKNOWN). Messages travel in Thrift's framed transport (a 4-byte big-endian length, then
the message), encoded with the compact protocol (Flume's default) or the binary one.

This module encodes and decodes exactly these messages, a whole batch per call, with
every length and count checked against the bytes that are actually there before anything
is allocated. thriftpy2 loads the IDL (this module checks itself against it at import)
and is the independent implementation the tests compare with; its generic codecs are
not used on the data path because its compact protocol is pure Python per field (about
0.1M events/s), and its C binary decoder trusts the counts it reads (a 20-byte frame
announcing 2^31 list elements makes it build empty structs until memory runs out).

Decoding raises ProtocolError, naming what was wrong; the caller closes the connection.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flumed.event import Event
from flumed.rpc.errors import ProtocolError as ProtocolError
from flumed.rpc.errors import RemoteError as RemoteError

Proto = Literal["compact", "binary"]

IDL_PATH = Path(__file__).with_name("flume.thrift")

#: libthrift's default largest frame (TConfiguration.DEFAULT_MAX_FRAME_SIZE).
DEFAULT_MAX_FRAME = 16_384_000
#: How deep unknown nested fields may go before the message counts as garbage.
MAX_DEPTH = 64


class Status(enum.IntEnum):
    """The answer to an append: enum Status of flume.thrift, sent as an i32."""

    OK = 0
    FAILED = 1
    ERROR = 2
    UNKNOWN = 3


class LimitExceeded(ProtocolError):
    """A well-formed call over a configured limit: answered with an exception, the
    connection goes on."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Most events per call, headers per event, and headers of one call in all."""

    max_events: int | None = None
    max_headers: int | None = None
    max_batch_headers: int | None = None


_NO_LIMITS = Limits()


# Message types (TMessageType) and TApplicationException types.
CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
UNKNOWN_METHOD = 1
INTERNAL_ERROR = 6

APPEND = "append"
APPEND_BATCH = "appendBatch"
METHODS = (APPEND, APPEND_BATCH)

# Field ids of the IDL (checked against flume.thrift by check_idl()).
F_HEADERS, F_BODY, F_ARG, F_SUCCESS = 1, 2, 1, 0

# Binary protocol types (TType).
B_STOP, B_BOOL, B_BYTE, B_DOUBLE, B_I16, B_I32, B_I64, B_STRING = 0, 2, 3, 4, 6, 8, 10, 11
B_STRUCT, B_MAP, B_SET, B_LIST, B_UUID = 12, 13, 14, 15, 16
# Compact protocol types.
C_STOP, C_TRUE, C_FALSE, C_BYTE, C_I16, C_I32, C_I64, C_DOUBLE = 0, 1, 2, 3, 4, 5, 6, 7
C_BINARY, C_LIST, C_SET, C_MAP, C_STRUCT, C_UUID = 8, 9, 10, 11, 12, 13

COMPACT_ID = 0x82
COMPACT_VERSION = 1
BINARY_VERSION = 0x80010000

_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
_FIELD = struct.Struct(">bh")
_U32 = struct.Struct(">I")
_MAP = struct.Struct(">BBi")

_FRAME = _U32.pack


def check_idl() -> None:
    """Check that flume.thrift declares what this codec implements (called by the tests
    and by `load_idl`).

    Raises:
        ImportError: the IDL and the codec disagree.
    """
    m = load_idl()
    from thriftpy2.thrift import TType

    ev = m.ThriftFlumeEvent.thrift_spec
    svc = m.ThriftSourceProtocol
    want = {
        "event": ev[F_HEADERS][:3] == (TType.MAP, "headers", (TType.STRING, TType.STRING))
        and ev[F_BODY][:2] == (TType.BINARY, "body"),
        "status": dict(m.Status._NAMES_TO_VALUES) == {s.name: s.value for s in Status},
        "methods": sorted(svc.thrift_services) == sorted(METHODS),
        "append": svc.append_args.thrift_spec[F_ARG][:2] == (TType.STRUCT, "event"),
        "appendBatch": svc.appendBatch_args.thrift_spec[F_ARG][:2] == (TType.LIST, "events"),
        "result": svc.appendBatch_result.thrift_spec[F_SUCCESS][:2] == (TType.I32, "success"),
    }
    bad = [k for k, ok in want.items() if not ok]
    if bad:
        raise ImportError(f"{IDL_PATH.name} disagrees with thrift_protocol.py on: {bad}")


_idl: Any = None


def load_idl() -> Any:
    """flume.thrift as a thriftpy2 module (`flume_thrift`), loaded once."""
    global _idl
    if _idl is None:
        import thriftpy2

        _idl = thriftpy2.load(str(IDL_PATH), module_name="flume_thrift")
    return _idl


# ------------------------------------------------------------------------------------
# Calls (what a client sends) and their decoding on the server.
# ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """One decoded request. `events` is None for a method the service does not have."""

    method: str
    seqid: int
    proto: Proto
    events: list[Event] | None
    strict: bool = True  # binary only: versioned message header


def decode_call(frame: bytes, limits: Limits = _NO_LIMITS) -> Call:
    """Decode one framed message's payload (without the 4-byte length).

    The protocol is told by the first byte: 0x82 compact, 0x80 binary (versioned
    header), 0x00 binary with the old unversioned header.

    Raises:
        LimitExceeded: the call is over `limits` (checked from the counts, before the
            events or headers are built); `.call` has the method and seqid to answer.
        ProtocolError: naming what is wrong.
    """
    if not frame:
        raise ProtocolError("empty frame")
    try:
        first = frame[0]
        if first == COMPACT_ID:
            return _CompactReader(frame, limits).call()
        if first == 0x80 or first == 0x00:
            return _BinaryReader(frame, limits).call()
    except (IndexError, struct.error) as e:
        raise ProtocolError(f"truncated message ({e})") from None
    except RecursionError:
        raise ProtocolError("nesting too deep") from None
    raise ProtocolError(
        f"not a Thrift message: first byte 0x{first:02x} (want 0x82 compact or 0x80 binary)"
    )


def _lenient(raw: bytes) -> str:
    # Java's Thrift decodes strings with replacement of malformed UTF-8; so do we.
    return raw.decode("utf-8", "replace")


class _Reader:
    """Cursor over one message. `pos` only moves forward; reads past the end raise."""

    __slots__ = ("buf", "end", "limits", "pos")

    def __init__(self, buf: bytes, limits: Limits = _NO_LIMITS) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.limits = limits

    def limit_events(self, n: int) -> None:
        m = self.limits.max_events
        if m is not None and n > m:
            raise LimitExceeded(
                f"appendBatch of {n} events exceeds the limit of {m} (max-batch-events)"
            )

    def limit_headers(self, nh: int, total: int) -> None:
        lim = self.limits
        if lim.max_headers is not None and nh > lim.max_headers:
            raise LimitExceeded(
                f"an event with {nh} headers exceeds the limit of {lim.max_headers} "
                "(max-event-headers)"
            )
        if lim.max_batch_headers is not None and total > lim.max_batch_headers:
            raise LimitExceeded(
                f"a call with more than {lim.max_batch_headers} headers in all exceeds the "
                "limit (max-batch-headers)"
            )

    def take(self, n: int, what: str) -> bytes:
        p = self.pos
        if n < 0 or n > self.end - p:
            raise ProtocolError(f"{what} of {n} bytes exceeds the {self.end - p} left in the frame")
        self.pos = p + n
        return self.buf[p : p + n]

    def advance(self, n: int, what: str) -> None:
        if n < 0 or n > self.end - self.pos:
            raise ProtocolError(f"{what} of {n} bytes exceeds the frame")
        self.pos += n

    def count(self, n: int, per: int, what: str) -> int:
        # Every element takes at least `per` bytes: a count the frame cannot hold is
        # garbage, rejected before a single element is built.
        if n < 0 or n * per > self.end - self.pos:
            raise ProtocolError(f"{what} count {n} exceeds what the frame can hold")
        return n

    def method(self, name: bytes, mtype: int, seqid: int, proto: Proto, strict: bool) -> Call:
        if mtype != CALL:
            raise ProtocolError(f"message type {mtype} where a call (1) was expected")
        try:
            method = name.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"method name {name[:40]!r} is not ASCII") from None
        call = Call(method, seqid, proto, None, strict)
        try:
            if method == APPEND_BATCH:
                call.events = self.args(batch=True)
            elif method == APPEND:
                call.events = self.args(batch=False)
        except LimitExceeded as e:
            e.call = call  # type: ignore[attr-defined]
            raise
        return call

    def args(self, batch: bool) -> list[Event]:
        raise NotImplementedError


# The compact and binary readers look alike (args, skip, the events loop) but stay two
# hand-tuned classes on purpose: each `events` loop is specialised to its encoding's
# field and length layout, the hot path of the thrift source (tests/bench/bench_thrift.py);
# a shared loop with per-encoding hooks costs a call per field.
class _CompactReader(_Reader):
    __slots__ = ()

    def varint(self) -> int:
        buf, p = self.buf, self.pos
        b = buf[p]
        if b < 0x80:
            self.pos = p + 1
            return b
        shift = 0
        out = 0
        while True:
            b = buf[p]
            p += 1
            out |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise ProtocolError("varint longer than 10 bytes")
        self.pos = p
        return out

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def seqid(self) -> int:
        # A plain varint of the i32 (not zigzag), as Java's writeVarint32 writes it.
        n = self.varint()
        if n > 0xFFFFFFFF:
            raise ProtocolError("sequence id out of range")
        return n - (1 << 32) if n & 0x80000000 else n

    def call(self) -> Call:
        vt = self.buf[1]
        self.pos = 2
        if vt & 0x1F != COMPACT_VERSION:
            raise ProtocolError(f"compact protocol version {vt & 0x1F} (want 1)")
        seqid = self.seqid()
        name = self.take(self.varint(), "method name")
        return self.method(name, vt >> 5, seqid, "compact", True)

    def field(self, last: int) -> tuple[int, int]:
        """(compact type, field id) of the next field; type C_STOP ends the struct."""
        b = self.buf[self.pos]
        self.pos += 1
        if b == 0:
            return C_STOP, 0
        delta = b >> 4
        fid = last + delta if delta else self.zigzag()
        return b & 0x0F, fid

    def args(self, batch: bool) -> list[Event]:
        events: list[Event] | None = None
        last = 0
        while True:
            ctype, fid = self.field(last)
            if ctype == C_STOP:
                break
            last = fid
            if fid == F_ARG and batch and ctype == C_LIST:
                b = self.buf[self.pos]
                self.pos += 1
                n = b >> 4
                if n == 15:
                    n = self.varint()
                if b & 0x0F != C_STRUCT:
                    raise ProtocolError(f"appendBatch list of compact type {b & 0x0F}, not structs")
                self.limit_events(n)
                events = self.events(self.count(n, 1, "event list"))
            elif fid == F_ARG and not batch and ctype == C_STRUCT:
                events = self.events(1)
            else:
                self.skip(ctype, MAX_DEPTH)
        if events is None:
            raise ProtocolError("call without its event argument (field 1)")
        return events

    def events(self, n: int) -> list[Event]:
        """`n` ThriftFlumeEvent structs. The hot loop: one pass, no call per field."""
        buf = self.buf
        end = self.end
        p = self.pos
        out: list[Event] = []
        append = out.append
        lim = self.limits
        big = 1 << 62
        max_h = big if lim.max_headers is None else lim.max_headers
        max_b = big if lim.max_batch_headers is None else lim.max_batch_headers
        total = 0
        for _ in range(n):
            headers: dict[str, str] | None = None
            body: bytes | None = None
            last = 0
            while True:
                b = buf[p]
                p += 1
                if b == 0:
                    break
                ctype = b & 0x0F
                if b >> 4:
                    fid = last + (b >> 4)
                else:
                    self.pos = p
                    fid = self.zigzag()
                    p = self.pos
                last = fid
                if fid == F_BODY and ctype == C_BINARY:
                    ln = buf[p]
                    if ln < 0x80:
                        p += 1
                    else:
                        self.pos = p
                        ln = self.varint()
                        p = self.pos
                    if ln > end - p:
                        raise ProtocolError(f"event body of {ln} bytes exceeds the frame")
                    body = buf[p : p + ln]
                    p += ln
                elif fid == F_HEADERS and ctype == C_MAP:
                    nh = buf[p]
                    if nh < 0x80:
                        p += 1
                    else:
                        self.pos = p
                        nh = self.varint()
                        p = self.pos
                    headers = {}
                    total += nh
                    if nh > max_h or total > max_b:
                        self.limit_headers(nh, total)
                    if nh:
                        if buf[p] != 0x88:  # (binary << 4) | binary: string → string
                            raise ProtocolError(
                                f"headers map of compact types 0x{buf[p]:02x}, not string→string"
                            )
                        p += 1
                        if 2 * nh > end - p:
                            raise ProtocolError(f"headers count {nh} exceeds the frame")
                        for _ in range(nh):
                            ln = buf[p]
                            if ln < 0x80:
                                p += 1
                            else:
                                self.pos = p
                                ln = self.varint()
                                p = self.pos
                            q = p + ln
                            if q > end:
                                raise ProtocolError(f"header name of {ln} bytes exceeds the frame")
                            try:
                                k = buf[p:q].decode()
                            except UnicodeDecodeError:
                                k = _lenient(buf[p:q])
                            ln = buf[q]
                            if ln < 0x80:
                                p = q + 1
                            else:
                                self.pos = q
                                ln = self.varint()
                                p = self.pos
                            q = p + ln
                            if q > end:
                                raise ProtocolError(f"header value of {ln} bytes exceeds the frame")
                            try:
                                headers[k] = buf[p:q].decode()
                            except UnicodeDecodeError:
                                headers[k] = _lenient(buf[p:q])
                            p = q
                else:
                    self.pos = p
                    self.skip(ctype, MAX_DEPTH)
                    p = self.pos
            if body is None or headers is None:
                raise ProtocolError(
                    "ThriftFlumeEvent without its required "
                    + ("body" if body is None else "headers")
                )
            append(Event(body, headers))
        self.pos = p
        return out

    def skip(self, ctype: int, depth: int, in_container: bool = False) -> None:
        """Skip one value of an unknown field (bounded: no allocation, depth-limited)."""
        if depth <= 0:
            raise ProtocolError("nesting too deep")
        if ctype in (C_TRUE, C_FALSE):
            if in_container:  # a bool element is a byte; a bool field has none
                self.take(1, "bool")
        elif ctype == C_BYTE:
            self.take(1, "byte")
        elif ctype in (C_I16, C_I32, C_I64):
            self.varint()
        elif ctype == C_DOUBLE:
            self.take(8, "double")
        elif ctype == C_UUID:
            self.take(16, "uuid")
        elif ctype == C_BINARY:
            self.advance(self.varint(), "string")
        elif ctype in (C_LIST, C_SET):
            b = self.buf[self.pos]
            self.pos += 1
            n = b >> 4
            if n == 15:
                n = self.varint()
            for _ in range(self.count(n, 1, "list")):
                self.skip(b & 0x0F, depth - 1, True)
        elif ctype == C_MAP:
            n = self.varint()
            if n:
                kv = self.buf[self.pos]
                self.pos += 1
                for _ in range(self.count(n, 2, "map")):
                    self.skip(kv >> 4, depth - 1, True)
                    self.skip(kv & 0x0F, depth - 1, True)
        elif ctype == C_STRUCT:
            last = 0
            while True:
                t, fid = self.field(last)
                if t == C_STOP:
                    break
                last = fid
                self.skip(t, depth - 1)
        else:
            raise ProtocolError(f"unknown compact type {ctype}")


class _BinaryReader(_Reader):
    __slots__ = ()

    def i32(self) -> int:
        p = self.pos
        if p + 4 > self.end:
            raise ProtocolError("truncated i32")
        self.pos = p + 4
        return _I32.unpack_from(self.buf, p)[0]  # type: ignore[no-any-return]

    def call(self) -> Call:
        head = self.i32()
        if head < 0:
            if head & 0xFFFF0000 != BINARY_VERSION:
                raise ProtocolError(f"binary protocol version 0x{head & 0xFFFF0000:08x}")
            name = self.take(self.i32(), "method name")
            mtype = head & 0xFF
            strict = True
        else:
            name = self.take(head, "method name")
            mtype = self.take(1, "message type")[0]
            strict = False
        seqid = self.i32()
        return self.method(name, mtype, seqid, "binary", strict)

    def field(self) -> tuple[int, int]:
        if self.buf[self.pos] == B_STOP:
            self.pos += 1
            return B_STOP, 0
        t, fid = _FIELD.unpack_from(self.buf, self.pos)  # struct.error when truncated
        self.pos += 3
        return t, fid

    def args(self, batch: bool) -> list[Event]:
        events: list[Event] | None = None
        while True:
            t, fid = self.field()
            if t == B_STOP:
                break
            if fid == F_ARG and batch and t == B_LIST:
                et = self.take(1, "list type")[0]
                n = self.i32()
                if et != B_STRUCT:
                    raise ProtocolError(f"appendBatch list of type {et}, not structs")
                self.limit_events(n)
                events = self.events(self.count(n, 1, "event list"))
            elif fid == F_ARG and not batch and t == B_STRUCT:
                events = self.events(1)
            else:
                self.skip(t, MAX_DEPTH)
        if events is None:
            raise ProtocolError("call without its event argument (field 1)")
        return events

    def events(self, n: int) -> list[Event]:
        """`n` ThriftFlumeEvent structs. The hot loop: one pass, no call per field."""
        buf = self.buf
        end = self.end
        p = self.pos
        unpack_field = _FIELD.unpack_from
        unpack_i32 = _I32.unpack_from
        unpack_map = _MAP.unpack_from
        out: list[Event] = []
        append = out.append
        lim = self.limits
        big = 1 << 62
        max_h = big if lim.max_headers is None else lim.max_headers
        max_b = big if lim.max_batch_headers is None else lim.max_batch_headers
        total = 0
        for _ in range(n):
            headers: dict[str, str] | None = None
            body: bytes | None = None
            while True:
                if buf[p] == B_STOP:
                    p += 1
                    break
                t, fid = unpack_field(buf, p)  # struct.error when truncated
                p += 3
                if fid == F_BODY and t == B_STRING:
                    ln = unpack_i32(buf, p)[0]
                    p += 4
                    if ln < 0 or ln > end - p:
                        raise ProtocolError(f"event body of {ln} bytes exceeds the frame")
                    body = buf[p : p + ln]
                    p += ln
                elif fid == F_HEADERS and t == B_MAP:
                    kt, vt, nh = unpack_map(buf, p)
                    p += 6
                    headers = {}
                    total += nh
                    if nh > max_h or total > max_b:
                        self.limit_headers(nh, total)
                    if nh:
                        if kt != B_STRING or vt != B_STRING:
                            raise ProtocolError(
                                f"headers map of types {kt}/{vt}, not string→string"
                            )
                        if nh < 0 or 8 * nh > end - p:
                            raise ProtocolError(f"headers count {nh} exceeds the frame")
                        for _ in range(nh):
                            ln = unpack_i32(buf, p)[0]
                            p += 4
                            q = p + ln
                            if ln < 0 or q > end:
                                raise ProtocolError(f"header name of {ln} bytes exceeds the frame")
                            try:
                                k = buf[p:q].decode()
                            except UnicodeDecodeError:
                                k = _lenient(buf[p:q])
                            ln = unpack_i32(buf, q)[0]
                            p = q + 4
                            q = p + ln
                            if ln < 0 or q > end:
                                raise ProtocolError(f"header value of {ln} bytes exceeds the frame")
                            try:
                                headers[k] = buf[p:q].decode()
                            except UnicodeDecodeError:
                                headers[k] = _lenient(buf[p:q])
                            p = q
                else:
                    self.pos = p
                    self.skip(t, MAX_DEPTH)
                    p = self.pos
            if body is None or headers is None:
                raise ProtocolError(
                    "ThriftFlumeEvent without its required "
                    + ("body" if body is None else "headers")
                )
            append(Event(body, headers))
        self.pos = p
        return out

    _FIXED = {B_BOOL: 1, B_BYTE: 1, B_I16: 2, B_I32: 4, B_I64: 8, B_DOUBLE: 8, B_UUID: 16}

    def skip(self, t: int, depth: int) -> None:
        """Skip one value of an unknown field (bounded: no allocation, depth-limited)."""
        if depth <= 0:
            raise ProtocolError("nesting too deep")
        size = self._FIXED.get(t)
        if size is not None:
            self.take(size, "value")
        elif t == B_STRING:
            self.advance(self.i32(), "string")
        elif t in (B_LIST, B_SET):
            et = self.take(1, "list type")[0]
            for _ in range(self.count(self.i32(), 1, "list")):
                self.skip(et, depth - 1)
        elif t == B_MAP:
            kt, vt = self.take(2, "map types")
            for _ in range(self.count(self.i32(), 2, "map")):
                self.skip(kt, depth - 1)
                self.skip(vt, depth - 1)
        elif t == B_STRUCT:
            while True:
                ft, _fid = self.field()
                if ft == B_STOP:
                    break
                self.skip(ft, depth - 1)
        else:
            raise ProtocolError(f"unknown binary type {t}")


# ------------------------------------------------------------------------------------
# Encoding: calls (client side) and replies (server side). Each returns a whole frame.
# ------------------------------------------------------------------------------------

_VARINT1 = [bytes([i]) for i in range(128)]


def _uvarint(n: int) -> bytes:
    if n < 0x80:
        return _VARINT1[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag32(n: int) -> bytes:
    return _uvarint(((n << 1) ^ (n >> 31)) & 0xFFFFFFFF)


def _compact_head(name: str, mtype: int, seqid: int) -> bytes:
    nb = name.encode("ascii")
    return (
        bytes((COMPACT_ID, (mtype << 5) | COMPACT_VERSION))
        + _uvarint(seqid & 0xFFFFFFFF)
        + _uvarint(len(nb))
        + nb
    )


def _binary_head(name: str, mtype: int, seqid: int, strict: bool = True) -> bytes:
    nb = name.encode("ascii")
    if strict:
        return _U32.pack(BINARY_VERSION | mtype) + _I32.pack(len(nb)) + nb + _I32.pack(seqid)
    return _I32.pack(len(nb)) + nb + bytes((mtype,)) + _I32.pack(seqid)


def _compact_events(events: Sequence[Event], parts: list[bytes]) -> None:
    append = parts.append
    v1 = _VARINT1
    for e in events:
        h = e.headers
        if h:
            hp = [b"\x1b", _uvarint(len(h)), b"\x88"]
            for k, v in h.items():
                kb = k.encode()
                vb = v.encode()
                hp += (_uvarint(len(kb)), kb, _uvarint(len(vb)), vb)
            append(b"".join(hp))
        else:
            append(b"\x1b\x00")  # field 1 map, zero entries
        body = e.body
        n = len(body)
        append(b"\x18" + (v1[n] if n < 0x80 else _uvarint(n)))  # field 2 binary
        append(body)
        append(b"\x00")


_B_EMPTY_HEADERS = bytes((B_MAP,)) + _I16.pack(F_HEADERS) + bytes((B_STRING, B_STRING)) + bytes(4)
_B_HEADERS = bytes((B_MAP,)) + _I16.pack(F_HEADERS) + bytes((B_STRING, B_STRING))
_B_BODY = bytes((B_STRING,)) + _I16.pack(F_BODY)


def _binary_events(events: Sequence[Event], parts: list[bytes]) -> None:
    append = parts.append
    i32 = _I32.pack
    for e in events:
        h = e.headers
        if h:
            hp = [_B_HEADERS, i32(len(h))]
            for k, v in h.items():
                kb = k.encode()
                vb = v.encode()
                hp += (i32(len(kb)), kb, i32(len(vb)), vb)
            append(b"".join(hp))
        else:
            append(_B_EMPTY_HEADERS)
        body = e.body
        append(_B_BODY + i32(len(body)))
        append(body)
        append(b"\x00")


def _frame(parts: list[bytes]) -> bytes:
    payload = b"".join(parts)
    return _FRAME(len(payload)) + payload


def encode_append_batch(events: Sequence[Event], seqid: int, proto: Proto) -> bytes:
    """The frame of an `appendBatch(events)` call."""
    n = len(events)
    parts: list[bytes]
    if proto == "compact":
        # Field 1 list of structs: short form up to 14 elements, else a varint size.
        lh = bytes((n << 4 | C_STRUCT,)) if n < 15 else bytes((0xF0 | C_STRUCT,)) + _uvarint(n)
        parts = [_compact_head(APPEND_BATCH, CALL, seqid), b"\x19", lh]
        _compact_events(events, parts)
    else:
        parts = [
            _binary_head(APPEND_BATCH, CALL, seqid),
            bytes((B_LIST,)) + _I16.pack(F_ARG) + bytes((B_STRUCT,)) + _I32.pack(n),
        ]
        _binary_events(events, parts)
    parts.append(b"\x00")  # end of the args struct
    return _frame(parts)


def encode_append(event: Event, seqid: int, proto: Proto) -> bytes:
    """The frame of an `append(event)` call."""
    parts: list[bytes]
    if proto == "compact":
        parts = [_compact_head(APPEND, CALL, seqid), b"\x1c"]
        _compact_events([event], parts)
    else:
        parts = [_binary_head(APPEND, CALL, seqid), bytes((B_STRUCT,)) + _I16.pack(F_ARG)]
        _binary_events([event], parts)
    parts.append(b"\x00")
    return _frame(parts)


def encode_reply(call: Call, status: Status) -> bytes:
    """The frame answering `call` with `status`, in the caller's protocol."""
    if call.proto == "compact":
        # Field 0 cannot be delta-encoded: long form (type byte, zigzag id 0).
        body = bytes((C_I32, 0)) + _zigzag32(int(status)) + b"\x00"
        head = _compact_head(call.method, REPLY, call.seqid)
    else:
        body = bytes((B_I32,)) + _I16.pack(F_SUCCESS) + _I32.pack(int(status)) + b"\x00"
        head = _binary_head(call.method, REPLY, call.seqid, call.strict)
    return _frame([head, body])


def encode_exception(call: Call, kind: int, message: str) -> bytes:
    """The frame answering `call` with a TApplicationException (message, type)."""
    mb = message.encode()
    if call.proto == "compact":
        head = _compact_head(call.method, EXCEPTION, call.seqid)
        body = b"\x18" + _uvarint(len(mb)) + mb + b"\x15" + _zigzag32(kind) + b"\x00"
    else:
        head = _binary_head(call.method, EXCEPTION, call.seqid, call.strict)
        body = (
            bytes((B_STRING,))
            + _I16.pack(1)
            + _I32.pack(len(mb))
            + mb
            + bytes((B_I32,))
            + _I16.pack(2)
            + _I32.pack(kind)
            + b"\x00"
        )
    return _frame([head, body])


# ------------------------------------------------------------------------------------
# Replies, decoded on the client.
# ------------------------------------------------------------------------------------


def decode_reply(frame: bytes, method: str, seqid: int, proto: Proto) -> Status:
    """The Status in the reply to call (`method`, `seqid`).

    Raises:
        RemoteError: the server answered with a TApplicationException.
        ProtocolError: the reply is malformed, for another call, or in another protocol.
    """
    try:
        if proto == "compact":
            return _compact_reply(_CompactReader(frame), method, seqid)
        return _binary_reply(_BinaryReader(frame), method, seqid)
    except (IndexError, struct.error) as e:
        raise ProtocolError(f"truncated reply ({e})") from None


def _check_reply(name: bytes, mtype: int, got: int, method: str, seqid: int) -> None:
    if name != method.encode() or got != seqid:
        raise ProtocolError(f"reply to {name[:40]!r} #{got}, expected {method!r} #{seqid}")
    if mtype not in (REPLY, EXCEPTION):
        raise ProtocolError(f"message type {mtype} where a reply was expected")


def _compact_reply(r: _CompactReader, method: str, seqid: int) -> Status:
    if r.buf[0] != COMPACT_ID:
        raise ProtocolError(f"reply is not in the compact protocol (first byte {r.buf[0]:#x})")
    vt = r.buf[1]
    r.pos = 2
    if vt & 0x1F != COMPACT_VERSION:
        raise ProtocolError(f"compact protocol version {vt & 0x1F} (want 1)")
    got = r.seqid()
    name = r.take(r.varint(), "method name")
    _check_reply(name, vt >> 5, got, method, seqid)
    status: int | None = None
    message, kind = "", 0
    last = 0
    while True:
        t, fid = r.field(last)
        if t == C_STOP:
            break
        last = fid
        if vt >> 5 == REPLY and fid == F_SUCCESS and t == C_I32:
            status = r.zigzag()
        elif vt >> 5 == EXCEPTION and fid == 1 and t == C_BINARY:
            message = r.take(r.varint(), "message").decode("utf-8", "replace")
        elif vt >> 5 == EXCEPTION and fid == 2 and t == C_I32:
            kind = r.zigzag()
        else:
            r.skip(t, MAX_DEPTH)
    return _status(vt >> 5, status, message, kind)


def _binary_reply(r: _BinaryReader, method: str, seqid: int) -> Status:
    head = r.i32()
    if head < 0:
        if head & 0xFFFF0000 != BINARY_VERSION:
            raise ProtocolError(f"reply is not in the binary protocol (0x{head & 0xFFFFFFFF:08x})")
        name = r.take(r.i32(), "method name")
        mtype = head & 0xFF
    else:
        name = r.take(head, "method name")
        mtype = r.take(1, "message type")[0]
    got = r.i32()
    _check_reply(name, mtype, got, method, seqid)
    status: int | None = None
    message, kind = "", 0
    while True:
        t, fid = r.field()
        if t == B_STOP:
            break
        if mtype == REPLY and fid == F_SUCCESS and t == B_I32:
            status = r.i32()
        elif mtype == EXCEPTION and fid == 1 and t == B_STRING:
            message = r.take(r.i32(), "message").decode("utf-8", "replace")
        elif mtype == EXCEPTION and fid == 2 and t == B_I32:
            kind = r.i32()
        else:
            r.skip(t, MAX_DEPTH)
    return _status(mtype, status, message, kind)


def _status(mtype: int, status: int | None, message: str, kind: int) -> Status:
    if mtype == EXCEPTION:
        raise RemoteError(message or "TApplicationException", kind)
    if status is None:
        raise ProtocolError("reply without a status (missing result)")
    try:
        return Status(status)
    except ValueError:
        return Status.UNKNOWN


class FrameDecoder:
    """Splits a byte stream into Thrift framed-transport messages (4-byte big-endian length,
    then the message): `feed()` returns complete (0, message) pairs, as PackDecoder does.

    Raises:
        ProtocolError: a frame of length 0 or over `max_frame` (checked from the length,
            before the frame is buffered), with a hint when the client seems not to frame.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def partial(self) -> bool:
        """True while part of a frame is buffered."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        out: list[tuple[int, bytes]] = []
        while end - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if n == 0 or n > self.max_frame:
                raise ProtocolError(self._bad_length(n, bytes(buf[pos : pos + 4])))
            if end - pos - 4 < n:
                break
            out.append((0, bytes(buf[pos + 4 : pos + 4 + n])))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out

    def _bad_length(self, n: int, head: bytes) -> str:
        if n == 0:
            return "empty frame (length 0)"
        why = f"frame of {n} bytes exceeds max-frame-bytes {self.max_frame}"
        if head[0] in (0x80, 0x82):
            return why + " (the client seems to send unframed Thrift; Flume's is framed)"
        if n > 0x7FFFFFFF or head.isascii():
            return why + f" (not Thrift framed transport? it began with {head!r})"
        return why
