"""flumed against an independent implementation: the Apache `avro` package's own
`avro.ipc` Requestor and Responder, carried over Netty framing written here.

The package speaks Avro IPC the way its HTTP transport needs it; the subclasses below
close the gaps to a Netty connection (ref doc section 8): the handshake is sent and
expected once per connection, not with every call.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import avro.ipc
import avro.protocol
import pytest

from flumed.agent import Agent
from flumed.event import Event
from flumed.rpc.avro_client import REMOTE_HASHES, AvroRpcClient, RpcError
from flumed.rpc.avro_protocol import LOCAL_HASH, PROTOCOL_JSON, Status
from tests.integration.avro_helpers import collector, drain, forwarder, numbered, put, start_agent
from tests.util import wait_until

PROTOCOL = avro.protocol.parse(PROTOCOL_JSON)


# -- a Netty-framed transceiver and a requestor that handshakes once per connection -------


class NettyTransceiver:
    """Blocking, one request at a time: `transceive(bytes) -> bytes` in Netty packs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.remote_name = f"127.0.0.1:{port}"
        self.serial = 0
        self.established = False

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed by the server")
            out += chunk
        return out

    def transceive(self, request: bytes) -> bytes:
        self.serial += 1
        # Split the request over two buffers, as Java's ByteBufferOutputStream may.
        half = len(request) // 2
        self.sock.sendall(
            struct.pack(">iii", self.serial, 2, half)
            + request[:half]
            + struct.pack(">i", len(request) - half)
            + request[half:]
        )
        serial, count = struct.unpack(">ii", self._read(8))
        assert serial == self.serial
        parts = []
        for _ in range(count):
            (n,) = struct.unpack(">i", self._read(4))
            parts.append(self._read(n))
        return b"".join(parts)

    def close(self) -> None:
        self.sock.close()


class NettyRequestor(avro.ipc.Requestor):
    """Writes (and reads) the handshake only until the connection is established.

    Also: after a `BOTH` answer to a learnt server hash the package leaves its remote
    protocol unset; take it from the package's own cache.
    """

    def write_handshake_request(self, encoder: Any) -> None:
        if self._remote_protocol is None:
            name = self.transceiver.remote_name
            self._remote_protocol = avro.ipc.REMOTE_PROTOCOLS.get(name, self.local_protocol)
        if not self.transceiver.established:
            super().write_handshake_request(encoder)

    def read_handshake_response(self, decoder: Any) -> bool:
        if self.transceiver.established:
            return True
        done = super().read_handshake_response(decoder)
        self.transceiver.established = done
        return done


class JavaHashRequestor(NettyRequestor):
    """Identifies the protocol by the hash a Java Flume client sends."""

    def write_handshake_request(self, encoder: Any) -> None:
        if self._remote_protocol is None:
            self._remote_protocol = self.local_protocol
        if self.transceiver.established:
            return
        remote = avro.ipc.REMOTE_HASHES.get(self.transceiver.remote_name, LOCAL_HASH)
        datum: dict[str, Any] = {"clientHash": LOCAL_HASH, "serverHash": remote}
        if self.send_protocol:
            datum["clientProtocol"] = PROTOCOL_JSON
        avro.ipc.HANDSHAKE_REQUESTOR_WRITER.write(datum, encoder)


def _events(datums: list[dict[str, Any]]) -> list[Event]:
    return [Event(d["body"], d["headers"]) for d in datums]


@pytest.fixture
async def collector_agent() -> AsyncIterator[Agent]:
    b = await start_agent(collector(), "b")
    yield b
    await b.stop()


@pytest.mark.parametrize("requestor", [NettyRequestor, JavaHashRequestor])
async def test_avro_requestor_to_flumed_source(collector_agent: Agent, requestor: type) -> None:
    port = collector_agent.sources["r"].port
    events = numbered(250)
    datums = [{"headers": e.headers, "body": e.body} for e in events]

    def client_session() -> list[str]:
        answers = []
        for _ in range(2):  # two connections: the second reuses the learnt server hash
            t = NettyTransceiver(port)
            try:
                r = requestor(PROTOCOL, t)
                answers.append(r.request("appendBatch", {"events": datums[:200]}))
                answers.append(r.request("append", {"event": datums[200]}))
                answers.append(r.request("appendBatch", {"events": datums[201:]}))
            finally:
                t.close()
        return answers

    try:
        answers = await asyncio.to_thread(client_session)
    finally:
        avro.ipc.REMOTE_HASHES.pop(f"127.0.0.1:{port}", None)
        avro.ipc.REMOTE_PROTOCOLS.pop(f"127.0.0.1:{port}", None)
    assert answers == ["OK"] * 6
    assert await drain(collector_agent.channels["c"]) == events + events
    counter = collector_agent.sources["r"].counter
    assert counter.AppendBatchAcceptedCount == 4 and counter.AppendAcceptedCount == 2


# -- an avro Responder behind a Netty-framed server -----------------------------------------


class NettyResponder(avro.ipc.Responder):
    """Reads the handshake only until the connection is established (`conn` is the
    connection being served, set before each `respond`)."""

    def __init__(self, java_hash: bool, answers: list[str]) -> None:
        super().__init__(PROTOCOL)
        if java_hash:
            self._local_hash = LOCAL_HASH
            self.set_protocol_cache(LOCAL_HASH, self.local_protocol)
        self.answers = answers
        self.received: list[tuple[str, list[Event]]] = []
        self.conn: dict[str, Any] = {}

    def process_handshake(self, decoder: Any, encoder: Any) -> Any:
        if self.conn.get("remote") is not None:
            return self.conn["remote"]
        remote = super().process_handshake(decoder, encoder)
        self.conn["remote"] = remote
        return remote

    def invoke(self, message: Any, request: dict[str, Any]) -> str:
        datums = request["events"] if message.name == "appendBatch" else [request["event"]]
        answer = self.answers.pop(0) if self.answers else "OK"
        if answer == "raise":
            raise RuntimeError("the responder failed")
        self.received.append((answer, _events(datums)))
        return answer


async def _serve(responder: NettyResponder) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn: dict[str, Any] = {}
        try:
            while True:
                serial, count = struct.unpack(">ii", await reader.readexactly(8))
                parts = []
                for _ in range(count):
                    (n,) = struct.unpack(">i", await reader.readexactly(4))
                    parts.append(await reader.readexactly(n))
                responder.conn = conn
                answer = responder.respond(b"".join(parts))
                writer.write(struct.pack(">iii", serial, 1, len(answer)) + answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("java_hash", [False, True])
async def test_flumed_client_to_avro_responder(java_hash: bool) -> None:
    responder = NettyResponder(java_hash, ["OK", "FAILED", "raise", "OK"])
    server = await _serve(responder)
    port = server.sockets[0].getsockname()[1]
    client = AvroRpcClient("127.0.0.1", port, request_timeout=10)
    events = numbered(100)
    try:
        await client.connect()
        assert await client.append_batch(events[:50]) is Status.OK
        assert await client.append_batch(events[50:]) is Status.FAILED
        with pytest.raises(RpcError, match="the responder failed"):
            await client.append_batch(events[50:])
        assert await client.append(Event(b"single", {"x": "y"})) is Status.OK
        await client.connect()  # a new connection: the handshake again
        assert await client.append_batch(events[50:]) is Status.OK
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
        REMOTE_HASHES.pop(f"127.0.0.1:{port}", None)
    assert responder.received == [
        ("OK", events[:50]),
        ("FAILED", events[50:]),
        ("OK", [Event(b"single", {"x": "y"})]),
        ("OK", events[50:]),
    ]


async def test_flumed_sink_to_avro_responder() -> None:
    """The sink retries a batch the responder refused; every event is answered OK once."""
    responder = NettyResponder(False, ["OK", "FAILED"])
    server = await _serve(responder)
    port = server.sockets[0].getsockname()[1]
    a = await start_agent(forwarder(port), "a")
    try:
        events = numbered(1000)
        await put(a.channels["c"], events)
        await wait_until(lambda: a.sinks["k"].counter.EventDrainSuccessCount == 1000, timeout=30)
    finally:
        await a.stop()
        server.close()
        await server.wait_closed()
        REMOTE_HASHES.pop(f"127.0.0.1:{port}", None)
    ok = [e for answer, batch in responder.received if answer == "OK" for e in batch]
    assert ok == events
    assert [a for a, _ in responder.received].count("FAILED") == 1
