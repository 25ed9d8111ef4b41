"""The Thrift codec against thriftpy2's own codecs (an independent implementation), golden
bytes written from the protocol specifications, and malformed input."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
import thriftpy2
from thriftpy2.protocol import TBinaryProtocol, TCompactProtocol, TCyBinaryProtocol
from thriftpy2.protocol.binary import TBinaryProtocol as TPyBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType
from thriftpy2.transport import TMemoryBuffer
from thriftpy2.transport.memory import TCyMemoryBuffer

from flumed.event import Event
from flumed.rpc import thrift_protocol as tp
from flumed.rpc.thrift_protocol import (
    Call,
    ProtocolError,
    RemoteError,
    Status,
    decode_call,
    decode_reply,
    encode_append,
    encode_append_batch,
    encode_exception,
    encode_reply,
)

IDL = tp.load_idl()
SVC = IDL.ThriftSourceProtocol

# (name, protocol class, transport class) of thriftpy2 codecs, and our name for the protocol.
CODECS = [
    ("compact", TCompactProtocol, TMemoryBuffer),
    ("binary", TCyBinaryProtocol, TCyMemoryBuffer),
    ("binary", TPyBinaryProtocol, TMemoryBuffer),
]
CODEC_IDS = ["compact", "binary-cython", "binary-python"]


def sample_events() -> list[Event]:
    return [
        Event(b"", {}),
        Event(b"plain", {}),
        Event(b"\x00\xff" * 70, {"host": "web01", "timestamp": "1700000000000"}),
        Event(b"x" * 20000, {"k" * 200: "v" * 300}),
        Event("héllo wörld ✓".encode(), {"ключ": "значение ✓", "": ""}),
    ] + [Event(b"%d" % i, {"n": str(i)}) for i in range(40)]


def tp_write(proto_cls, trans_cls, name: str, mtype: int, seqid: int, obj) -> bytes:
    trans = trans_cls()
    proto = proto_cls(trans)
    proto.write_message_begin(name, mtype, seqid)
    proto.write_struct(obj)
    proto.write_message_end()
    return trans.getvalue()


def tp_read(proto_cls, trans_cls, data: bytes, obj):
    proto = proto_cls(trans_cls(data))
    head = proto.read_message_begin()
    proto.read_struct(obj)
    return head, obj


def as_thrift(events: list[Event]) -> list:
    return [IDL.ThriftFlumeEvent(headers=e.headers, body=e.body) for e in events]


def test_codec_matches_the_shipped_idl():
    tp.check_idl()
    assert tp.IDL_PATH.name == "flume.thrift"
    assert "namespace java org.apache.flume.thrift" in tp.IDL_PATH.read_text()


@pytest.mark.parametrize(("proto", "pcls", "tcls"), CODECS, ids=CODEC_IDS)
@pytest.mark.parametrize("seqid", [0, 1, 127, 128, 2**31 - 1, -1, -(2**31)])
def test_thriftpy2_reads_our_append_batch(proto, pcls, tcls, seqid):
    events = sample_events()
    frame = encode_append_batch(events, seqid, proto)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    (name, mtype, got), args = tp_read(pcls, tcls, frame[4:], SVC.appendBatch_args())
    # thriftpy2's compact reader leaves the varint seqid unsigned; Java casts it to i32.
    assert (name, mtype, got & 0xFFFFFFFF) == ("appendBatch", TMessageType.CALL, seqid & 0xFFFFFFFF)
    assert [(e.headers, e.body) for e in args.events] == [(e.headers, e.body) for e in events]


@pytest.mark.parametrize(("proto", "pcls", "tcls"), CODECS, ids=CODEC_IDS)
def test_we_read_thriftpy2_append_batch_and_append(proto, pcls, tcls):
    events = sample_events()
    data = tp_write(
        pcls, tcls, "appendBatch", TMessageType.CALL, 77, SVC.appendBatch_args(as_thrift(events))
    )
    call = decode_call(data)
    assert (call.method, call.seqid, call.proto) == ("appendBatch", 77, proto)
    assert call.events == events
    one = tp_write(
        pcls, tcls, "append", TMessageType.CALL, 78, SVC.append_args(as_thrift(events[2:3])[0])
    )
    call = decode_call(one)
    assert (call.method, call.seqid, call.events) == ("append", 78, events[2:3])


@pytest.mark.parametrize(("proto", "pcls", "tcls"), CODECS, ids=CODEC_IDS)
def test_thriftpy2_reads_our_append(proto, pcls, tcls):
    ev = Event(b"body", {"a": "b"})
    frame = encode_append(ev, 5, proto)
    (name, _, seqid), args = tp_read(pcls, tcls, frame[4:], SVC.append_args())
    assert (name, seqid, args.event.headers, args.event.body) == ("append", 5, {"a": "b"}, b"body")


@pytest.mark.parametrize(("proto", "pcls", "tcls"), CODECS, ids=CODEC_IDS)
@pytest.mark.parametrize("status", list(Status))
def test_replies_both_ways(proto, pcls, tcls, status):
    call = Call("appendBatch", 9, proto, [])
    frame = encode_reply(call, status)
    (name, mtype, seqid), res = tp_read(pcls, tcls, frame[4:], SVC.appendBatch_result())
    assert (name, mtype, seqid, res.success) == ("appendBatch", TMessageType.REPLY, 9, status)
    data = tp_write(
        pcls, tcls, "append", TMessageType.REPLY, 10, SVC.append_result(success=int(status))
    )
    assert decode_reply(data, "append", 10, proto) is status


@pytest.mark.parametrize(("proto", "pcls", "tcls"), CODECS, ids=CODEC_IDS)
def test_application_exceptions_both_ways(proto, pcls, tcls):
    call = Call("ping", 3, proto, None)
    frame = encode_exception(call, tp.UNKNOWN_METHOD, "Invalid method name: 'ping'")
    (name, mtype, seqid), exc = tp_read(pcls, tcls, frame[4:], TApplicationException())
    assert (name, mtype, seqid) == ("ping", TMessageType.EXCEPTION, 3)
    assert (exc.type, exc.message) == (tp.UNKNOWN_METHOD, "Invalid method name: 'ping'")
    data = tp_write(
        pcls,
        tcls,
        "appendBatch",
        TMessageType.EXCEPTION,
        4,
        TApplicationException(TApplicationException.INTERNAL_ERROR, "boom"),
    )
    with pytest.raises(RemoteError, match="boom") as ei:
        decode_reply(data, "appendBatch", 4, proto)
    assert ei.value.kind == TApplicationException.INTERNAL_ERROR


def test_golden_compact_bytes():
    # Compact protocol (THRIFT-110): 0x82, version 1 | CALL << 5, seqid as a plain varint,
    # name; field 1 (delta 1) list (9) of 1 struct (12); field 1 map, 0 entries; field 2
    # (delta 1) binary (8) of 2 bytes; stops.
    frame = encode_append_batch([Event(b"xy")], 300, "compact")
    payload = bytes.fromhex(
        "8221ac020b617070656e644261746368" + "19" + "1c" + "1b00" + "18027879" + "00" + "00"
    )
    assert frame == len(payload).to_bytes(4, "big") + payload
    reply = encode_reply(Call("appendBatch", 300, "compact", []), Status.FAILED)
    # REPLY << 5 | 1 = 0x41; field 0 long form: type i32 (5), zigzag id 0; zigzag(1) = 2.
    assert reply[4:] == bytes.fromhex("8241ac020b617070656e644261746368" + "0500" + "02" + "00")


def test_golden_binary_bytes():
    frame = encode_append_batch([Event(b"xy", {"h": "v"})], 1, "binary")
    payload = bytes.fromhex(
        "80010001" + "0000000b" + b"appendBatch".hex() + "00000001"
        "0f0001" + "0c" + "00000001"  # field 1: list of 1 struct
        "0d0001" + "0b0b" + "00000001" + "00000001" + "68" + "00000001" + "76"  # headers
        "0b0002" + "00000002" + "7879" + "00"  # body, end of event
        "00"  # end of args
    )
    assert frame == len(payload).to_bytes(4, "big") + payload
    reply = encode_reply(Call("append", 1, "binary", []), Status.OK)
    assert reply[4:] == bytes.fromhex(
        "80010002" + "00000006" + b"append".hex() + "00000001" + "080000" + "00000000" + "00"
    )


def test_old_unversioned_binary_header_is_accepted_and_answered_in_kind():
    data = tp_write(
        lambda t: TBinaryProtocol(t, strict_write=False),
        TCyMemoryBuffer,
        "appendBatch",
        TMessageType.CALL,
        12,
        SVC.appendBatch_args(as_thrift([Event(b"a")])),
    )
    assert data[:4] == (11).to_bytes(4, "big")
    call = decode_call(data)
    assert (call.proto, call.strict, call.events) == ("binary", False, [Event(b"a")])
    reply = encode_reply(call, Status.OK)
    assert reply[4:8] == (11).to_bytes(4, "big")
    assert decode_reply(reply[4:], "appendBatch", 12, "binary") is Status.OK


EXTENDED_IDL = textwrap.dedent(
    """
    struct Inner { 1: i32 a, 2: list<string> b }
    struct ThriftFlumeEvent {
      7: bool flag, 8: double d, 9: i64 big, 10: i16 small, 11: byte tiny,
      1: required map<string, string> headers,
      12: map<i32, Inner> nested, 13: set<bool> bools, 14: list<list<i64>> lists,
      2: required binary body,
      30: string tail,
    }
    enum Status { OK, FAILED, ERROR, UNKNOWN }
    service ThriftSourceProtocol {
      Status append(1: ThriftFlumeEvent event),
      Status appendBatch(3: i32 extra, 1: list<ThriftFlumeEvent> events),
    }
    """
)


@pytest.mark.parametrize(("proto", "pcls", "tcls"), CODECS, ids=CODEC_IDS)
def test_unknown_fields_are_skipped(tmp_path: Path, proto, pcls, tcls):
    idl = tmp_path / "extended.thrift"
    idl.write_text(EXTENDED_IDL)
    ext = thriftpy2.load(str(idl), module_name=f"extended_{proto}_{pcls.__name__}_thrift")
    ev = ext.ThriftFlumeEvent(
        flag=True,
        d=1.5,
        big=-(2**40),
        small=-3,
        tiny=7,
        headers={"h": "v"},
        nested={1: ext.Inner(a=-1, b=["x", "yy"]), 2: ext.Inner()},
        bools={True, False},
        lists=[[1, 2], [], [2**50]],
        body=b"payload",
        tail="end",
    )
    args = ext.ThriftSourceProtocol.appendBatch_args(extra=5, events=[ev] * 20)
    call = decode_call(tp_write(pcls, tcls, "appendBatch", TMessageType.CALL, 1, args))
    assert call.events == [Event(b"payload", {"h": "v"})] * 20


@pytest.mark.parametrize("proto", ["compact", "binary"])
def test_every_truncation_is_a_protocol_error(proto):
    payload = encode_append_batch(sample_events()[:6], 3, proto)[4:]
    for cut in range(len(payload)):
        with pytest.raises(ProtocolError):
            decode_call(payload[:cut])


@pytest.mark.parametrize("proto", ["compact", "binary"])
def test_random_corruption_never_escapes_as_another_error(proto):
    rnd = random.Random(4)
    payload = bytearray(encode_append_batch(sample_events()[:8], 3, proto)[4:])
    for _ in range(3000):
        data = bytearray(payload)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            decode_call(bytes(data))
        except ProtocolError:
            pass


def test_huge_counts_are_refused_before_anything_is_built():
    head = encode_append_batch([], 1, "compact")[4:-3]  # up to the list header
    # 2^31 - 1 structs announced in a frame of a few bytes.
    data = head + b"\x19\xfc\xff\xff\xff\xff\x07" + b"\x00" * 4
    with pytest.raises(ProtocolError, match="count"):
        decode_call(data)
    bhead = encode_append_batch([], 1, "binary")[4:-6]
    data = bhead + b"\x0c\x7f\xff\xff\xff" + b"\x00" * 4
    with pytest.raises(ProtocolError, match="count"):
        decode_call(data)
    # A body announced larger than the frame.
    data = encode_append_batch([Event(b"abc")], 1, "binary")[4:]
    i = data.index(b"\x00\x00\x00\x03abc")
    bad = data[:i] + b"\x7f\xff\xff\xff" + data[i + 4 :]
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_call(bad)


def test_deep_nesting_is_refused():
    # appendBatch args with an unknown field 5 of nested lists, 200 deep.
    head = encode_append_batch([], 1, "compact")[4:-3]
    nested = b"\x59" + b"\x19" * 200 + b"\x00"
    with pytest.raises(ProtocolError, match="deep"):
        decode_call(head + nested)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"GET / HTTP/1.1\r\n", "not a Thrift message"),
        (b"\x82\x22\x01\x0bappendBatch", "version"),
        (b"\x82\x41\x01\x0bappendBatch\x00", "message type"),
        (b"\x80\x02\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x01", "version"),
        (b"\x82\x21\x01\x0bappendBatch\x00", "without its event"),
        (b"\x82\x21\x01\x0bappendBatch\x19\x1c\x28\x01x\x00\x00", "required headers"),
        (b"\x82\x21\x01\x0bappendBatch\x19\x1c\x1b\x00\x00\x00", "required body"),
        (b"\x82\x21\x01\x0bappendBatch\x19\x18\x00", "not structs"),
        (b"\x82\x21\x01\x0bappendBatch\x19\x1c\x1b\x01\x55\x00\x00\x00", "string"),
        (b"\x82\x21\x01\x02\xff\xfe\x00", "ASCII"),
    ],
)
def test_malformed_calls_say_what_is_wrong(data, match):
    with pytest.raises(ProtocolError, match=match):
        decode_call(data)


def test_unknown_method_decodes_without_events():
    data = b"\x82\x21\x05\x04ping\x00"
    call = decode_call(data)
    assert (call.method, call.seqid, call.events) == ("ping", 5, None)


def test_reply_for_another_call_is_refused():
    reply = encode_reply(Call("appendBatch", 1, "compact", []), Status.OK)[4:]
    with pytest.raises(ProtocolError, match="expected"):
        decode_reply(reply, "appendBatch", 2, "compact")
    with pytest.raises(ProtocolError, match="compact"):
        decode_reply(
            encode_reply(Call("appendBatch", 1, "binary", []), Status.OK)[4:],
            "appendBatch",
            1,
            "compact",
        )
    with pytest.raises(ProtocolError, match="truncated"):
        decode_reply(reply[:-2], "appendBatch", 1, "compact")


def test_unknown_status_value_reads_as_unknown():
    data = tp_write(
        TCompactProtocol,
        TMemoryBuffer,
        "append",
        TMessageType.REPLY,
        1,
        SVC.append_result(success=9),
    )
    assert decode_reply(data, "append", 1, "compact") is Status.UNKNOWN


def test_invalid_utf8_in_headers_is_replaced_as_java_does():
    data = bytearray(encode_append_batch([Event(b"b", {"k": "v"})], 1, "compact")[4:])
    i = data.index(b"\x01v")
    data[i + 1] = 0xFF
    (ev,) = decode_call(bytes(data)).events or []
    assert ev.headers == {"k": "\ufffd"}
