"""Avro RPC wire format: known byte sequences written from the protocol specification
(Avro IPC handshake, Netty framing, flume.avdl), decoded and encoded by flumed."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from flumed.event import Event
from flumed.rpc.avro_protocol import (
    KNOWN_HASHES,
    LOCAL_HASH,
    PROTOCOL_JSON,
    HandshakeRequest,
    HandshakeResponse,
    Match,
    PackDecoder,
    ProtocolError,
    Reader,
    RemoteError,
    ServerHandshake,
    Status,
    compatibility_problem,
    encode_append,
    encode_append_batch,
    encode_error_response,
    encode_events,
    encode_long,
    encode_pack,
    encode_status_response,
    read_status_response,
)

JAVA_HASH = "86aadae2c45474c0fe93ffd0f2350a65"  # released Flume 1.x (Avro <= 1.11.0)
MASTER_HASH = "8076c53714e01f6e2c1deb9544e7b1fe"  # Flume master (Avro 1.11.1)
NODOC_HASH = "30da54059df72d9584b867d5202e2069"

# The spec's worked example: the first appendBatch of a connection, one event with
# headers {"k": "v"} and body "hi", from a client whose hash is the Java one.
HANDSHAKE_REQ = bytes.fromhex(JAVA_HASH + "00" + JAVA_HASH + "00")
CALL = bytes.fromhex(
    "00" + "16" + b"appendBatch".hex() + "02" + "02026b0276" + "00" + "046869" + "00"
)
FIRST_REQUEST = HANDSHAKE_REQ + CALL
# The answer of a server whose hash is the same: BOTH, nulls, then meta {}, no error, OK.
FIRST_RESPONSE = bytes.fromhex("00000000" + "000000")


def h(x: str) -> bytes:
    return bytes.fromhex(x)


class TestProtocolText:
    def test_java_rendering_and_hash(self) -> None:
        assert len(PROTOCOL_JSON.encode()) == 1334
        assert LOCAL_HASH.hex() == JAVA_HASH
        assert hashlib.md5(PROTOCOL_JSON.encode()).hexdigest() == JAVA_HASH
        assert PROTOCOL_JSON.startswith(
            '{"protocol":"AvroSourceProtocol","namespace":"org.apache.flume.source.avro",'
            '"doc":"* Licensed to the Apache Software Foundation (ASF) under one\\n * or more'
        )
        assert PROTOCOL_JSON.endswith(
            '"appendBatch":{"request":[{"name":"events","type":{"type":"array",'
            '"items":"AvroFlumeEvent"}}],"response":"Status"}}}'
        )

    def test_known_hashes(self) -> None:
        hexes = {k.hex() for k in KNOWN_HASHES}
        assert {JAVA_HASH, MASTER_HASH, NODOC_HASH, "707cba5ff90563725bf99ecb99ba0028"} == hexes

    def test_python_avro_rendering_hash(self) -> None:
        import avro.protocol

        proto = avro.protocol.parse(PROTOCOL_JSON)
        assert proto.md5 in KNOWN_HASHES
        assert compatibility_problem(str(proto)) is None


class TestPrimitives:
    @pytest.mark.parametrize(
        ("n", "wire"), [(0, "00"), (1, "02"), (-1, "01"), (11, "16"), (64, "8001"), (-65, "8101")]
    )
    def test_long(self, n: int, wire: str) -> None:
        assert encode_long(n).hex() == wire
        assert Reader(h(wire)).read_long() == n

    def test_long_extremes_roundtrip(self) -> None:
        for n in (2**63 - 1, -(2**63), 2**31, 300, 8191, 8192, 16383, 16384):
            assert Reader(encode_long(n)).read_long() == n

    def test_status_enum(self) -> None:
        assert encode_status_response(Status.OK) == h("000000")
        assert encode_status_response(Status.FAILED) == h("000002")
        assert encode_status_response(Status.UNKNOWN) == h("000004")

    def test_overlong_varint(self) -> None:
        with pytest.raises(ProtocolError, match="longer than 10"):
            Reader(b"\xff" * 11 + b"\x00").read_long()


class TestHandshake:
    def test_request_bytes(self) -> None:
        req = HandshakeRequest(LOCAL_HASH, None, LOCAL_HASH)
        assert req.encode() == HANDSHAKE_REQ
        assert HandshakeRequest.read(Reader(HANDSHAKE_REQ)) == req

    def test_request_with_protocol_and_meta(self) -> None:
        req = HandshakeRequest(b"\x01" * 16, "{}", b"\x02" * 16, {"a": b"\x00\x01"})
        wire = req.encode()
        assert wire == (
            b"\x01" * 16 + h("02") + h("04") + b"{}" + b"\x02" * 16 + h("02 02 02 61 04 0001 00")
        )
        assert HandshakeRequest.read(Reader(wire)) == req

    def test_response_both(self) -> None:
        assert HandshakeResponse(Match.BOTH).encode() == h("00000000")
        assert HandshakeResponse.read(Reader(h("00000000"))) == HandshakeResponse(Match.BOTH)

    def test_response_client(self) -> None:
        resp = HandshakeResponse(Match.CLIENT, PROTOCOL_JSON, LOCAL_HASH)
        wire = resp.encode()
        assert wire[:4] == h("02 02 ec14")  # CLIENT, branch 1, string of 1334 bytes
        assert wire[4 : 4 + 1334] == PROTOCOL_JSON.encode()
        assert wire[1338:] == h("02") + LOCAL_HASH + h("00")
        assert HandshakeResponse.read(Reader(wire)) == resp

    def test_server_both_for_java_client(self) -> None:
        resp = ServerHandshake().respond(HandshakeRequest.read(Reader(HANDSHAKE_REQ)))
        assert resp.encode() == FIRST_RESPONSE[:4]

    def test_server_client_for_flume_master(self) -> None:
        master = h(MASTER_HASH)
        resp = ServerHandshake().respond(HandshakeRequest(master, None, master))
        assert resp.match is Match.CLIENT
        assert resp.server_protocol == PROTOCOL_JSON and resp.server_hash == LOCAL_HASH

    def test_server_none_then_learns(self) -> None:
        server = ServerHandshake()
        unknown = b"\x07" * 16
        resp = server.respond(HandshakeRequest(unknown, None, LOCAL_HASH))
        assert resp.match is Match.NONE
        assert resp.server_protocol == PROTOCOL_JSON and resp.server_hash == LOCAL_HASH
        # The resend carries a protocol text of the same shape (other spelling): BOTH.
        text = json.dumps(json.loads(PROTOCOL_JSON), indent=1)
        assert server.respond(HandshakeRequest(unknown, text, LOCAL_HASH)).match is Match.BOTH
        assert server.respond(HandshakeRequest(unknown, None, LOCAL_HASH)).match is Match.BOTH

    def test_server_refuses_other_protocol(self) -> None:
        other = json.loads(PROTOCOL_JSON)
        other["messages"]["append"]["response"] = "string"
        with pytest.raises(ProtocolError, match="different types"):
            ServerHandshake().respond(HandshakeRequest(b"\x09" * 16, json.dumps(other), b"\0" * 16))
        with pytest.raises(ProtocolError, match="unreadable"):
            ServerHandshake().respond(HandshakeRequest(b"\x09" * 16, "not json", b"\0" * 16))
        other = {"protocol": "X", "messages": {"drop": {"request": [], "response": "null"}}}
        assert compatibility_problem(json.dumps(other)) == "unknown message 'drop'"


class TestCalls:
    def test_first_append_batch_bytes(self) -> None:
        payload = encode_append_batch([Event(b"hi", {"k": "v"})], HANDSHAKE_REQ)
        assert payload == FIRST_REQUEST
        assert len(payload) == 58
        pack = encode_pack(1, payload)
        assert pack[:12] == h("00000001 00000001 0000003a")
        assert pack[12:] == payload

    def test_decode_first_request(self) -> None:
        r = Reader(FIRST_REQUEST)
        req = HandshakeRequest.read(r)
        assert req.client_hash == LOCAL_HASH and req.client_protocol is None
        assert req.server_hash == LOCAL_HASH and req.meta is None
        assert r.read_map_bytes() == {}
        assert r.read_string() == "appendBatch"
        assert r.read_events() == [Event(b"hi", {"k": "v"})]
        assert r.remaining == 0

    def test_established_call_and_answer(self) -> None:
        assert encode_append_batch([Event(b"hi", {"k": "v"})]) == CALL
        assert read_status_response(Reader(h("000000"))) is Status.OK
        assert read_status_response(Reader(h("000002"))) is Status.FAILED

    def test_append(self) -> None:
        wire = encode_append(Event(b"x", {}))
        assert wire == h("00 0c") + b"append" + h("00 02 78")
        r = Reader(wire)
        r.read_map_bytes()
        assert r.read_string() == "append"
        assert r.read_event() == Event(b"x", {})

    def test_error_response(self) -> None:
        wire = encode_error_response("boom")
        assert wire == h("00 01 00 08 62 6f 6f 6d")
        with pytest.raises(RemoteError, match="boom"):
            read_status_response(Reader(wire))

    def test_empty_batch(self) -> None:
        assert encode_events([]) == h("00")
        assert Reader(h("00")).read_events() == []


class TestEventDecoding:
    def test_roundtrip_shapes(self) -> None:
        rnd = random.Random(7)
        events = []
        for i in range(300):
            body = bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 63, 64, 200, 9000])))
            headers = {
                f"k{j}" * rnd.choice([1, 40]): "vé" * rnd.choice([0, 1, 50]) for j in range(i % 4)
            }
            events.append(Event(body, headers))
        events.append(Event(b"z" * 70000, {"big": "x" * 20000}))
        assert Reader(encode_events(events)).read_events() == events

    def test_matches_fastavro(self) -> None:
        # An independent encoder of the same schema writes the same bytes.
        import io

        import fastavro

        schema = fastavro.parse_schema(
            {"type": "array", "items": json.loads(PROTOCOL_JSON)["types"][1]}
        )
        rnd = random.Random(3)
        sizes = [0, 63, 64, 8191, 8192, 16383, 16384, 1 << 21]
        events = [Event(rnd.randbytes(n), {"h": "é" * (n % 100)} if n % 2 else {}) for n in sizes]
        buf = io.BytesIO()
        fastavro.schemaless_writer(
            buf, schema, [{"headers": e.headers, "body": e.body} for e in events]
        )
        assert encode_events(events) == buf.getvalue()
        assert Reader(buf.getvalue()).read_events() == events

    def test_several_and_negative_blocks(self) -> None:
        # Writers may split arrays and maps into blocks; a negative count carries a size.
        ev = h("00 04") + b"ab"  # {} , "ab"
        # count 1, then count -2 with its byte size 8, then the end marker
        two_blocks = h("02") + ev + h("03 10") + ev + ev + h("00")
        assert Reader(two_blocks).read_events() == [Event(b"ab")] * 3
        header_blocks = h("02 02 02") + b"a" + h("02") + b"b" + h("01 08 02") + b"c" + h("02")
        header_blocks += b"d" + h("00 02") + b"x" + h("00")
        assert Reader(header_blocks).read_events() == [Event(b"x", {"a": "b", "c": "d"})]

    def test_every_truncation_is_a_protocol_error(self) -> None:
        wire = encode_events([Event(b"x" * 300, {"host": "a", "ts": "1"}), Event(b"y")])
        for cut in range(len(wire)):
            with pytest.raises(ProtocolError):
                Reader(wire[:cut]).read_events()

    def test_negative_length_and_huge_count(self) -> None:
        with pytest.raises(ProtocolError, match="negative"):
            Reader(h("02 00 01")).read_events()
        with pytest.raises(ProtocolError, match="exceeds"):
            Reader(h("feffffff0f 00")).read_events()  # 2^31 events in 2 bytes
        with pytest.raises(ProtocolError, match="exceeds"):
            Reader(h("02 00 feffffff0f") + b"x").read_events()

    def test_fuzz_only_protocol_errors(self) -> None:
        rnd = random.Random(11)
        good = encode_events([Event(b"abc", {"k": "v"})] * 3)
        for _ in range(3000):
            data = bytearray(good)
            for _ in range(rnd.randrange(1, 4)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            try:
                Reader(bytes(data)).read_events()
            except ProtocolError:
                pass
        for _ in range(2000):
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
            try:
                r = Reader(data)
                HandshakeRequest.read(r)
                r.read_map_bytes()
                r.read_string()
                r.read_events()
            except ProtocolError:
                pass


class TestFraming:
    def test_byte_by_byte(self) -> None:
        stream = encode_pack(1, b"hello") + encode_pack(2, b"") + encode_pack(7, b"x" * 1000)
        dec = PackDecoder()
        out = []
        for i in range(len(stream)):
            out += dec.feed(stream[i : i + 1])
            assert dec.partial == (i < len(stream) - 1 and i not in (16, 28))
        assert out == [(1, b"hello"), (2, b""), (7, b"x" * 1000)]

    def test_several_buffers_are_one_payload(self) -> None:
        pack = h("00000005 00000003 00000002") + b"ab" + h("00000000 00000003") + b"cde"
        assert PackDecoder().feed(pack + encode_pack(6, b"f")) == [(5, b"abcde"), (6, b"f")]
        dec = PackDecoder()
        assert dec.feed(pack[:15]) == []
        assert dec.feed(pack[15:]) == [(5, b"abcde")]

    @pytest.mark.parametrize(
        ("wire", "msg"),
        [
            ("00000001 00000000", "buffer count 0"),
            ("00000001 ffffffff", "buffer count -1"),
            ("00000001 00000001 ffffff00", "length -256"),
            ("00000001 00000001 00100000", "frame limit"),
            ("00000001 00010000", "frame limit"),
            (b"GET / HTTP/1.1\r\n".hex(), "frame limit"),
        ],
    )
    def test_refused_before_reading_payload(self, wire: str, msg: str) -> None:
        with pytest.raises(ProtocolError, match=msg):
            PackDecoder(max_pack=1 << 16).feed(h(wire))

    def test_limit_counts_all_buffers(self) -> None:
        dec = PackDecoder(max_pack=100)
        with pytest.raises(ProtocolError, match="frame limit"):
            dec.feed(h("00000001 00000003 00000028") + b"x" * 40 + h("00000030"))
