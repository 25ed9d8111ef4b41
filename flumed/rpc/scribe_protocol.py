"""Scribe's `Log(list<LogEntry>)` on the wire, as Flume's ScribeSource serves it.

The interface is `scribe.thrift` (next to this module): `ResultCode Log(1: list<LogEntry>
messages)`, LogEntry {1: string category, 2: string message}, ResultCode {OK, TRY_LATER}.
Messages are framed (4-byte big-endian length) and binary-encoded, with the versioned
(strict) or the old unversioned message header. Decoding reuses the bounded binary reader
of flumed.rpc.thrift_protocol: every count and length is checked against the bytes of
the frame before anything is built, and unknown fields are skipped depth-limited.
(thriftpy2's generic C decoder trusts the counts it reads, see thrift_protocol.) thriftpy2
loads the IDL, which `check_idl()` compares with this codec; the tests' client is
generated from it.

Raises ProtocolError (from thrift_protocol) naming what was wrong.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flumed.event import Event
from flumed.rpc.thrift_protocol import (
    B_I32,
    B_LIST,
    B_STOP,
    B_STRING,
    B_STRUCT,
    MAX_DEPTH,
    Call,
    LimitExceeded,
    ProtocolError,
    _BinaryReader,
    _lenient,
    encode_exception,
)

IDL_PATH = Path(__file__).with_name("scribe.thrift")
LOG = "Log"
#: The header that carries an entry's category (Flume's ScribeSource.SCRIBE_CATEGORY).
CATEGORY = "category"
F_MESSAGES, F_CATEGORY, F_MESSAGE, F_SUCCESS = 1, 1, 2, 0
REPLY = 2

_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")


class ResultCode(enum.IntEnum):
    """enum ResultCode of scribe.thrift, sent as an i32."""

    OK = 0
    TRY_LATER = 1


@dataclass(slots=True)
class LogCall:
    """One decoded request: `events` is None for a method other than Log."""

    method: str
    seqid: int
    strict: bool
    events: list[Event] | None


class _ScribeReader(_BinaryReader):
    __slots__ = ("max_entries",)

    def __init__(self, buf: bytes, max_entries: int) -> None:
        super().__init__(buf)
        self.max_entries = max_entries

    def log_call(self) -> LogCall:
        head = self.i32()
        if head < 0:
            if head & 0xFFFF0000 != 0x80010000:
                raise ProtocolError(f"binary protocol version 0x{head & 0xFFFF0000:08x}")
            name = self.take(self.i32(), "method name")
            mtype = head & 0xFF
            strict = True
        else:
            name = self.take(head, "method name")
            mtype = self.take(1, "message type")[0]
            strict = False
        seqid = self.i32()
        if mtype != 1:
            raise ProtocolError(f"message type {mtype} where a call (1) was expected")
        try:
            method = name.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"method name {name[:40]!r} is not ASCII") from None
        call = LogCall(method, seqid, strict, None)
        if method == LOG:
            try:
                call.events = self.log_args()
            except LimitExceeded as e:
                e.call = call  # type: ignore[attr-defined]
                raise
        return call

    def log_args(self) -> list[Event]:
        events: list[Event] = []  # an absent list is an empty Log, as Flume takes it
        while True:
            t, fid = self.field()
            if t == B_STOP:
                return events
            if fid == F_MESSAGES and t == B_LIST:
                et = self.take(1, "list type")[0]
                n = self.i32()
                if et != B_STRUCT:
                    raise ProtocolError(f"Log list of type {et}, not LogEntry structs")
                if n > self.max_entries:
                    # An empty LogEntry is one byte on the wire and an event in memory:
                    # bounded here, not only by the frame.
                    raise LimitExceeded(
                        f"Log call of {n} entries exceeds the limit of {self.max_entries} "
                        "(max-batch-events)"
                    )
                events = [self.entry() for _ in range(self.count(n, 1, "LogEntry list"))]
            else:
                self.skip(t, MAX_DEPTH)

    def entry(self) -> Event:
        category = ""
        message = b""
        while True:
            t, fid = self.field()
            if t == B_STOP:
                return Event(message, {CATEGORY: category})
            if t == B_STRING and fid == F_CATEGORY:
                raw = self.take(self.i32(), "category")
                try:
                    category = raw.decode()
                except UnicodeDecodeError:
                    category = _lenient(raw)
            elif t == B_STRING and fid == F_MESSAGE:
                message = self.take(self.i32(), "message")
            else:
                self.skip(t, MAX_DEPTH)


def decode_log(frame: bytes, max_entries: int = 1 << 31) -> LogCall:
    """Decode one frame's payload (without its 4-byte length).

    Raises:
        LimitExceeded: a Log of more than `max_entries` entries (checked from the count);
            `.call` has what the answer needs.
        ProtocolError: not a binary Thrift call, or malformed (naming what is wrong).
    """
    if not frame:
        raise ProtocolError("empty frame")
    first = frame[0]
    if first not in (0x80, 0x00):
        what = "compact protocol" if first == 0x82 else f"first byte 0x{first:02x}"
        raise ProtocolError(f"not a binary Thrift message ({what}); Scribe speaks binary")
    try:
        return _ScribeReader(frame, max_entries).log_call()
    except (IndexError, struct.error) as e:
        raise ProtocolError(f"truncated message ({e})") from None


def _head(call: LogCall, mtype: int) -> bytes:
    nb = call.method.encode("ascii")
    if call.strict:
        return _U32.pack(0x80010000 | mtype) + _I32.pack(len(nb)) + nb + _I32.pack(call.seqid)
    return _I32.pack(len(nb)) + nb + bytes((mtype,)) + _I32.pack(call.seqid)


def encode_result(call: LogCall, code: ResultCode) -> bytes:
    """The frame answering `call` with `code` (Log_result.success)."""
    msg = _head(call, REPLY) + bytes((B_I32,)) + _I16.pack(F_SUCCESS) + _I32.pack(code) + b"\0"
    return _U32.pack(len(msg)) + msg


def encode_error(call: LogCall, kind: int, message: str) -> bytes:
    """The frame answering `call` with a TApplicationException (unknown method, limit)."""
    return encode_exception(
        Call(call.method, call.seqid, "binary", None, call.strict), kind, message
    )


_idl: Any = None


def load_idl() -> Any:
    """scribe.thrift as a thriftpy2 module (`scribe_thrift`), loaded once."""
    global _idl
    if _idl is None:
        import thriftpy2

        _idl = thriftpy2.load(str(IDL_PATH), module_name="scribe_thrift")
    return _idl


def check_idl() -> None:
    """Check that scribe.thrift declares what this codec implements (called by the tests).

    Raises:
        ImportError: the IDL and the codec disagree.
    """
    from thriftpy2.thrift import TType

    m = load_idl()
    entry = m.LogEntry.thrift_spec
    args = m.Scribe.Log_args.thrift_spec
    want = {
        "entry": entry[F_CATEGORY][:2] == (TType.STRING, "category")
        and entry[F_MESSAGE][:2] == (TType.STRING, "message"),
        "codes": dict(m.ResultCode._NAMES_TO_VALUES) == {c.name: c.value for c in ResultCode},
        "methods": list(m.Scribe.thrift_services) == [LOG],
        "args": args[F_MESSAGES][:2] == (TType.LIST, "messages"),
        "result": m.Scribe.Log_result.thrift_spec[F_SUCCESS][:2] == (TType.I32, "success"),
    }
    bad = [k for k, ok in want.items() if not ok]
    if bad:
        raise ImportError(f"{IDL_PATH.name} disagrees with scribe_protocol.py on: {bad}")
