"""Avro source and sink over real sockets, in one process: delivery, push-back, a dead
next hop, bad input, TLS, deflate, ipFilter, timeouts, and the exact bytes on the wire."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flumed.agent import Agent
from flumed.event import Event
from flumed.rpc.avro_client import REMOTE_HASHES, AvroRpcClient, RpcError
from flumed.rpc.avro_protocol import (
    LOCAL_HASH,
    PROTOCOL_JSON,
    HandshakeRequest,
    HandshakeResponse,
    Match,
    Reader,
    RemoteError,
    Status,
    encode_append,
    encode_append_batch,
    encode_error_response,
    encode_status_response,
    read_status_response,
)
from tests.integration.avro_helpers import (
    RawClient,
    collector,
    drain,
    forwarder,
    make_pki,
    numbered,
    put,
    start_agent,
)
from tests.util import free_port, wait_until

JAVA_HASH = bytes.fromhex("86aadae2c45474c0fe93ffd0f2350a65")
HANDSHAKE = JAVA_HASH + b"\x00" + JAVA_HASH + b"\x00"
CALL = bytes.fromhex("00 16") + b"appendBatch" + bytes.fromhex("02 02 02 6b 02 76 00 04 68 69 00")


@pytest.fixture
async def agents() -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in reversed(started):
        await a.stop()


async def pair(
    agents: list[Agent], source: str = "", sink: str = "", b_channel: dict | None = None
) -> tuple[Agent, Agent]:
    b = await start_agent(collector(source=source, channel=b_channel), "b")
    agents.append(b)
    a = await start_agent(forwarder(b.sources["r"].port, sink=sink), "a")
    agents.append(a)
    return a, b


async def test_events_arrive_intact_and_in_order(agents: list[Agent]) -> None:
    a, b = await pair(agents)
    events = [*numbered(2500), Event(b"", {}), Event(bytes(range(256)) * 40, {"k": ""})]
    await put(a.channels["c"], events)
    await wait_until(lambda: b.channels["c"].size == len(events), what="all events at b")
    assert await drain(b.channels["c"]) == events
    src, sink = b.sources["r"].counter, a.sinks["k"].counter
    assert src.EventAcceptedCount == src.EventReceivedCount == len(events)
    assert src.AppendBatchAcceptedCount == 26 and src.OpenConnectionCount == 1
    assert sink.EventDrainSuccessCount == len(events) and sink.ConnectionCreatedCount == 1
    assert a.channels["c"].size == 0


async def test_full_channel_answers_failed_and_sender_keeps_events(agents: list[Agent]) -> None:
    # b's channel holds 150: the second batch of 100 does not fit and is refused whole.
    a, b = await pair(
        agents, b_channel={"capacity": 150, "transactionCapacity": 100, "keep-alive": 0.05}
    )
    events = numbered(300)
    await put(a.channels["c"], events)
    await wait_until(lambda: b.sources["r"].counter.ChannelWriteFail >= 1, what="FAILED")
    assert a.sinks["k"].counter.EventWriteFail >= 1
    assert b.channels["c"].size == 100
    assert a.channels["c"].size == 200  # rolled back, nothing lost
    got: list[Event] = []
    while len(got) < 300:  # make room; the sender retries after its backoff
        await wait_until(lambda: b.channels["c"].size > 0, what="more events at b")
        got += await drain(b.channels["c"])
    assert got == events  # each batch refused whole: no duplicates
    assert a.sinks["k"].counter.EventDrainSuccessCount == 300


async def test_dead_next_hop_keeps_events_and_reconnects(agents: list[Agent]) -> None:
    port = free_port()
    a = await start_agent(forwarder(port), "a")
    agents.append(a)
    events = numbered(500)
    await put(a.channels["c"], events)
    counter = a.sinks["k"].counter
    await wait_until(lambda: counter.ConnectionFailedCount >= 2, what="failed connects")
    assert a.channels["c"].size == 500 and counter.EventDrainAttemptCount == 0
    b = await start_agent(collector(port), "b")
    agents.append(b)
    await wait_until(lambda: b.channels["c"].size == 500, timeout=30, what="events after restart")
    assert await drain(b.channels["c"]) == events
    assert counter.ConnectionCreatedCount == 1


async def test_collector_restart_mid_stream(agents: list[Agent]) -> None:
    a, b = await pair(agents)
    port = b.sources["r"].port
    await put(a.channels["c"], numbered(200))
    await wait_until(lambda: b.channels["c"].size == 200)
    first = await drain(b.channels["c"])
    await b.stop()
    agents.remove(b)
    await put(a.channels["c"], numbered(200, 200))
    b = await start_agent(collector(port), "b")
    agents.append(b)
    await wait_until(lambda: b.channels["c"].size == 200, timeout=30)
    assert first + await drain(b.channels["c"]) == numbered(400)
    assert a.sinks["k"].counter.ConnectionCreatedCount == 2


async def test_wire_bytes_of_the_source(agents: list[Agent]) -> None:
    b = await start_agent(collector(), "b")
    agents.append(b)
    port = b.sources["r"].port
    c = await RawClient.open(port)
    # The spec's first appendBatch of a connection, and the BOTH + OK answer.
    await c.send(1, HANDSHAKE + CALL)
    assert await c.recv() == (1, bytes.fromhex("00000000 000000"))
    # The connection is established: no handshake on either side from now on.
    await c.send(2, CALL)
    assert await c.recv() == (2, bytes.fromhex("000000"))
    await c.send(9, encode_append(Event(b"one", {"a": "b"})))
    assert await c.recv() == (9, bytes.fromhex("000000"))
    # An unknown message: an error answer; the connection stays usable.
    await c.send(10, bytes.fromhex("00 08") + b"drop")
    serial, payload = await c.recv()
    assert serial == 10 and payload == encode_error_response("No message named 'drop'")
    await c.send(11, CALL)
    assert await c.recv() == (11, bytes.fromhex("000000"))
    await c.close()
    assert await drain(b.channels["c"]) == [
        Event(b"hi", {"k": "v"}),
        Event(b"hi", {"k": "v"}),
        Event(b"one", {"a": "b"}),
        Event(b"hi", {"k": "v"}),
    ]
    counter = b.sources["r"].counter
    assert counter.AppendBatchAcceptedCount == 3 and counter.AppendAcceptedCount == 1
    # An unknown client hash without a protocol: NONE with our protocol, call not run;
    # the resend with the client's protocol text is served.
    c = await RawClient.open(port)
    other = b"\x05" * 16
    await c.send(1, HandshakeRequest(other, None, other).encode() + CALL)
    serial, payload = await c.recv()
    resp = HandshakeResponse.read(Reader(payload))
    assert resp == HandshakeResponse(Match.NONE, PROTOCOL_JSON, LOCAL_HASH)
    spelled = json.dumps(json.loads(PROTOCOL_JSON), indent=2)
    await c.send(2, HandshakeRequest(other, spelled, LOCAL_HASH).encode() + CALL)
    assert await c.recv() == (2, bytes.fromhex("00000000 000000"))
    # A handshake ping (message name "") gets the handshake answer only.
    p = await RawClient.open(port)
    await p.send(1, HANDSHAKE + bytes.fromhex("00 00"))
    assert await p.recv() == (1, bytes.fromhex("00000000"))
    await c.close()
    await p.close()


async def test_wire_bytes_of_the_client() -> None:
    """A server written from the spec answers NONE first, as a Java server does for a
    protocol it does not know; the client resends with its protocol, then omits the
    handshake on the same connection."""
    seen: list[tuple[int, bytes]] = []
    server_hash = b"\x0a" * 16

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answers = [
            HandshakeResponse(Match.NONE, PROTOCOL_JSON, server_hash).encode(),
            HandshakeResponse(Match.BOTH).encode() + encode_status_response(Status.OK),
            encode_status_response(Status.FAILED),
        ]
        for answer in answers:
            serial, count = struct.unpack(">ii", await reader.readexactly(8))
            (n,) = struct.unpack(">i", await reader.readexactly(4))
            seen.append((serial, await reader.readexactly(n)))
            assert count == 1
            writer.write(struct.pack(">iii", serial, 1, len(answer)) + answer)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AvroRpcClient("127.0.0.1", port, request_timeout=10)
    try:
        await client.connect()
        assert await client.append_batch([Event(b"hi", {"k": "v"})]) is Status.OK
        assert await client.append_batch([Event(b"hi", {"k": "v"})]) is Status.FAILED
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
        REMOTE_HASHES.pop(f"127.0.0.1:{port}", None)
    assert [s for s, _ in seen] == [1, 2, 3]
    assert seen[0][1] == HANDSHAKE + CALL  # byte for byte the spec's example
    resend = HandshakeRequest(LOCAL_HASH, PROTOCOL_JSON, server_hash).encode()
    assert seen[1][1] == resend + CALL
    assert seen[2][1] == CALL


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "frame limit"),
        (struct.pack(">iii", 7, 1, 7) + bytes.fromhex("00000000 000000"), "unexpected serial"),
        (struct.pack(">iii", 1, 1, 7) + bytes.fromhex("00000000 000012"), "Status index 9"),
        (struct.pack(">iii", 1, 1, 5) + bytes.fromhex("0000000000"), "malformed answer"),
        (struct.pack(">iii", 1, 1, 3) + bytes.fromhex("080000"), "Match index 4"),
    ],
)
async def test_client_refuses_bad_answers(answer: bytes, error: str) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(12)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client = AvroRpcClient("127.0.0.1", server.sockets[0].getsockname()[1], request_timeout=5)
    try:
        await client.connect()
        with pytest.raises(RpcError, match=error):
            await client.append_batch(numbered(3))
        assert not client.connected
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_bad_input_closes_only_that_connection(
    agents: list[Agent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    b = await start_agent(collector(source='max-frame-bytes = 1048576\n"frame-timeout" = 0.5'), "b")
    agents.append(b)
    port = b.sources["r"].port
    good = await RawClient.open(port)
    await good.send(1, HANDSHAKE + CALL)
    assert (await good.recv())[0] == 1
    incompatible = json.loads(PROTOCOL_JSON)
    incompatible["messages"]["append"]["response"] = "string"
    bad_inputs = {
        "garbage": b"\x13\x37" * 5000,
        "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "oversized": struct.pack(">iii", 1, 1, 1 << 30) + b"x" * 100,
        "too many buffers": struct.pack(">ii", 1, 1 << 20),
        "zero buffers": struct.pack(">ii", 1, 0),
        "bad handshake": struct.pack(">iii", 1, 1, 20) + b"\x01" * 16 + b"\x09\x00\x00\x00",
        "bad events": struct.pack(">iii", 1, 1, len(HANDSHAKE) + 14)
        + HANDSHAKE
        + bytes.fromhex("00 16")
        + b"appendBatch"
        + bytes.fromhex("02"),
        "incompatible protocol": b"",
        "half-open": struct.pack(">ii", 1, 1) + b"\x00\x00",
    }
    clients = {}
    for name, data in bad_inputs.items():
        clients[name] = c = await RawClient.open(port)
        if name == "incompatible protocol":
            hs = HandshakeRequest(b"\x0b" * 16, json.dumps(incompatible), LOCAL_HASH).encode()
            await c.send(1, hs + CALL)
        else:
            await c.send_raw(data)
    for name, c in clients.items():
        assert await c.closed_by_peer(), f"{name}: connection left open"
        await c.close()
    # The well-behaved client is still served on its connection.
    await good.send(2, CALL)
    assert await good.recv() == (2, bytes.fromhex("000000"))
    await good.close()
    counter = b.sources["r"].counter
    assert counter.EventReadFail == len(bad_inputs)
    assert counter.EventAcceptedCount == 2
    await wait_until(lambda: counter.OpenConnectionCount == 0)
    # Logged with the reason, at most once a second (the rest counted as suppressed).
    assert "closing connection from 127.0.0.1" in caplog.text


async def test_batch_over_the_event_limit_is_refused(agents: list[Agent]) -> None:
    b = await start_agent(collector(source='"max-batch-events" = 10'), "b")
    agents.append(b)
    c = await RawClient.open(b.sources["r"].port)
    await c.send(1, HANDSHAKE + encode_append_batch(numbered(11)))
    serial, payload = await c.recv()
    assert serial == 1 and payload[:4] == bytes.fromhex("00000000")  # handshake: BOTH
    with pytest.raises(RemoteError, match="max-batch-events"):
        read_status_response(Reader(payload, 4))
    # Refused, not dropped: the same connection goes on with smaller batches.
    await c.send(2, encode_append_batch(numbered(10)))
    assert await c.recv() == (2, bytes.fromhex("000000"))
    await c.close()
    assert await drain(b.channels["c"]) == numbered(10)
    assert b.sources["r"].counter.EventReadFail == 1


async def test_dead_peer_times_out_and_request_timeout(agents: list[Agent]) -> None:
    """A next hop that accepts but never answers: the call times out, is rolled back."""
    hung: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)
        await reader.read()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        a = await start_agent(forwarder(port, sink="request-timeout = 1000"), "a")
        agents.append(a)
        await put(a.channels["c"], numbered(50))
        counter = a.sinks["k"].counter
        await wait_until(lambda: counter.EventWriteFail >= 1, what="a timed-out call")
        assert a.channels["c"].size == 50
        assert counter.ConnectionClosedCount >= 1 and counter.EventDrainSuccessCount == 0
    finally:
        for w in hung:
            w.close()
        server.close()


@pytest.mark.parametrize(
    ("compress", "layer"),
    [(False, "outside-ssl"), (True, "outside-ssl"), (True, "inside-ssl")],
)
async def test_tls(agents: list[Agent], tmp_path: Path, compress: bool, layer: str) -> None:
    pki = make_pki(tmp_path)
    extra = f'"compression-layer" = "{layer}"\n'
    if compress:
        extra += '"compression-type" = "deflate"\n'
    a, b = await pair(
        agents,
        source=f'ssl = true\ncertificate = "{pki.chain}"\nkey = "{pki.key}"\n{extra}',
        sink=f'ssl = true\ntruststore = "{pki.ca}"\n{extra}',
    )
    events = numbered(1000)
    await put(a.channels["c"], events)
    await wait_until(lambda: b.channels["c"].size == 1000, what="events over TLS")
    assert await drain(b.channels["c"]) == events


async def test_tls_untrusted_server(agents: list[Agent], tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    a, b = await pair(
        agents,
        source=f'ssl = true\ncertificate = "{pki.chain}"\nkey = "{pki.key}"\n"frame-timeout" = 0.5',
        sink=f'ssl = true\ntruststore = "{pki.other_ca}"',
    )
    await put(a.channels["c"], numbered(10))
    counter = a.sinks["k"].counter
    await wait_until(lambda: counter.ConnectionFailedCount >= 1, what="refused certificate")
    assert a.channels["c"].size == 10 and b.channels["c"].size == 0
    # A plain-text client on the TLS port is bad input, closed.
    c = await RawClient.open(b.sources["r"].port)
    await c.send(1, HANDSHAKE + CALL)
    assert await c.closed_by_peer()
    await c.close()
    # So is one that never starts its TLS handshake (half-open), after frame-timeout.
    c = await RawClient.open(b.sources["r"].port)
    assert await c.closed_by_peer()
    await c.close()


async def test_deflate(agents: list[Agent]) -> None:
    a, b = await pair(
        agents,
        source='"compression-type" = "deflate"',
        sink='"compression-type" = "deflate"\n"compression-level" = 9',
    )
    events = numbered(3000)
    await put(a.channels["c"], events)
    await wait_until(lambda: b.channels["c"].size == 3000, what="compressed events")
    assert await drain(b.channels["c"]) == events


async def test_deflate_mismatch_is_refused(agents: list[Agent]) -> None:
    a, b = await pair(
        agents,
        source='"frame-timeout" = 0.5',
        sink='"compression-type" = "deflate"\n"request-timeout" = 2000',
    )
    await put(a.channels["c"], numbered(10))
    await wait_until(lambda: b.sources["r"].counter.EventReadFail >= 1, what="refused stream")
    await wait_until(lambda: a.sinks["k"].counter.EventWriteFail >= 1)
    assert a.channels["c"].size == 10 and b.channels["c"].size == 0


async def test_ip_filter(agents: list[Agent], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    a, b = await pair(agents, source='ipFilter = true\nipFilterRules = "deny:ip:127.*"')
    await put(a.channels["c"], numbered(10))
    await wait_until(lambda: a.sinks["k"].counter.EventWriteFail >= 1, what="refused peer")
    assert a.channels["c"].size == 10 and b.channels["c"].size == 0
    assert "refused by ipFilterRules" in caplog.text
    rules = "allow:name:localhost,deny:ip:*"
    b2 = await start_agent(
        collector(source=f'ipFilter = true\nipFilterRules = "{rules}"', name="b2"), "b2"
    )
    agents.append(b2)
    a2 = await start_agent(forwarder(b2.sources["r"].port, name="a2"), "a2")
    agents.append(a2)
    await put(a2.channels["c"], numbered(10))
    await wait_until(lambda: b2.channels["c"].size == 10, what="allowed peer")


async def test_reset_connection_interval(agents: list[Agent]) -> None:
    a, b = await pair(agents, sink='"reset-connection-interval" = 1')
    await put(a.channels["c"], numbered(100))
    await wait_until(lambda: b.channels["c"].size == 100)
    client = a.sinks["k"].client
    assert client is not None
    await wait_until(lambda: time.monotonic() - client.connected_at >= 1.0)
    await put(a.channels["c"], numbered(100, 100))
    await wait_until(lambda: b.channels["c"].size == 200)
    counter = a.sinks["k"].counter
    assert counter.ConnectionCreatedCount == 2 and counter.ConnectionClosedCount == 1
    assert await drain(b.channels["c"]) == numbered(200)
