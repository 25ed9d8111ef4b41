"""The thrift source and sink over real sockets, in one process: against thriftpy2's own
client and server (an independent implementation), bad clients, full channels, TLS."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import thriftpy2
from thriftpy2.protocol import TBinaryProtocolFactory, TCompactProtocolFactory
from thriftpy2.rpc import make_client, make_server
from thriftpy2.thrift import TApplicationException
from thriftpy2.transport import TFramedTransportFactory

from flumed.agent import Agent
from flumed.channels.base import Channel
from flumed.config.graph import build_agent
from flumed.errors import ConfigError
from flumed.event import Event
from flumed.rpc import thrift_protocol as tp
from tests.support.pki import Pki
from tests.util import free_port, wait_until, wait_until_sync

IDL = tp.load_idl()
PROTOCOLS = {"compact": TCompactProtocolFactory, "binary": TBinaryProtocolFactory}


@pytest.fixture
async def agents() -> AsyncIterator[Callable[..., Any]]:
    """Start in-process agents from one agent's section; all are stopped at the end."""
    started: list[Agent] = []

    async def start(section: dict[str, Any], name: str = "a") -> Agent:
        agent = Agent(build_agent({"agents": {name: section}}, name, "test"), grace=2.0)
        await agent.start()
        started.append(agent)
        return agent

    yield start
    for a in reversed(started):
        await a.stop()


def receiver(port: int, capacity: int = 100_000, **source: Any) -> dict[str, Any]:
    """thrift source → memory channel `c` with no sink: the test drains `c` itself."""
    return {
        "sources": {
            "r": {"type": "thrift", "bind": "127.0.0.1", "port": port, "channels": ["c"], **source}
        },
        "channels": {"c": {"type": "memory", "capacity": capacity, "transactionCapacity": 1000}},
    }


def sender(port: int, total: int, batch: int = 100, **sink: Any) -> dict[str, Any]:
    """seq → memory → thrift sink to 127.0.0.1:port."""
    return {
        "sources": {
            "s": {"type": "seq", "totalEvents": total, "batchSize": batch, "channels": ["c"]}
        },
        "channels": {"c": {"type": "memory", "capacity": 100_000, "transactionCapacity": 1000}},
        "sinks": {
            "k": {
                "type": "thrift",
                "channel": "c",
                "hostname": "127.0.0.1",
                "port": port,
                "batch-size": batch,
                **sink,
            }
        },
    }


async def drain(ch: Channel) -> list[Event]:
    out: list[Event] = []
    while True:
        async with ch.transaction() as tx:
            got = await tx.take_batch(1000)
        if not got:
            return out
        out += got


async def collect(ch: Channel, n: int, timeout: float = 30.0) -> list[Event]:
    """Drain `ch` until at least `n` events came out."""
    out: list[Event] = []

    async def enough() -> bool:
        out.extend(await drain(ch))
        return len(out) >= n

    await wait_until(enough, timeout, f"{n} events in channel {ch.name} (have {len(out)})")
    return out


def numbers(events: list[Event]) -> list[int]:
    return sorted(int(e.body) for e in events)


def thrift_client(port: int, proto: str = "compact", service: Any = None, **kw: Any) -> Any:
    return make_client(
        (service or IDL).ThriftSourceProtocol,
        "127.0.0.1",
        port,
        proto_factory=PROTOCOLS[proto](),
        trans_factory=TFramedTransportFactory(),
        timeout=10_000,
        **kw,
    )


# -- flumed sink → flumed source -----------------------------------------------------------


@pytest.mark.parametrize("proto", ["compact", "binary"])
async def test_sink_to_source_delivers_every_event(agents, proto):
    port = free_port()
    b = await agents(receiver(port), "b")
    a = await agents(sender(port, 5000, batch=250, protocol=proto), "a")
    got = await collect(b.channels["c"], 5000)
    assert numbers(got) == list(range(5000))
    k, r = a.sinks["k"].counter, b.sources["r"].counter
    await wait_until(lambda: k.EventDrainSuccessCount == 5000)
    assert (k.ConnectionCreatedCount, k.ConnectionFailedCount, k.EventWriteFail) == (1, 0, 0)
    assert (r.EventAcceptedCount, r.AppendBatchAcceptedCount, r.EventReadFail) == (5000, 20, 0)


async def test_full_channel_answers_failed_and_the_sender_retries_losing_nothing(agents):
    """A → B → C. B's channel is tiny and its sink cannot deliver (C is down), so B
    answers FAILED and A rolls back and retries; once C is up everything arrives once."""
    b_port, c_port, n = free_port(), free_port(), 3000
    b_section = receiver(b_port, capacity=200)
    b_section["channels"]["c"].update(transactionCapacity=100, **{"keep-alive": 0.05})
    b_section["sinks"] = {
        "k": {
            "type": "thrift",
            "channel": "c",
            "hostname": "127.0.0.1",
            "port": c_port,
            "batch-size": 100,
            "connect-timeout": 1000,
        }
    }
    b = await agents(b_section, "b")
    a = await agents(sender(b_port, n, batch=100), "a")
    await wait_until(lambda: b.sources["r"].counter.ChannelWriteFail >= 2, what="FAILED answers")
    await wait_until(lambda: a.sinks["k"].counter.EventWriteFail >= 2, what="sender retries")
    assert b.sinks["k"].counter.ConnectionFailedCount >= 1
    assert b.channels["c"].size == 200  # full, and nothing was taken for the dead hop
    assert a.sinks["k"].counter.EventDrainSuccessCount == 200
    c = await agents(receiver(c_port), "c")
    got = await collect(c.channels["c"], n, timeout=60)
    assert numbers(got) == list(range(n))  # all of them, each once
    assert b.sources["r"].counter.EventAcceptedCount == n


async def test_sink_splits_a_batch_larger_than_max_frame_bytes(agents):
    port = free_port()
    b = await agents(receiver(port, **{"max-frame-bytes": 4096}), "b")
    a = await agents(sender(port, 2000, batch=1000, **{"max-frame-bytes": 4096}), "a")
    got = await collect(b.channels["c"], 2000)
    assert numbers(got) == list(range(2000))
    # 1000 seq events take ~8 KB in compact: each batch went as several calls.
    assert b.sources["r"].counter.AppendBatchReceivedCount >= 4
    assert a.sinks["k"].counter.EventWriteFail == 0


async def test_dead_next_hop_keeps_events_and_counts_failed_connections(agents):
    port = free_port()
    a = await agents(sender(port, 500, **{"connect-timeout": 1000}), "a")
    k = a.sinks["k"].counter
    await wait_until(lambda: k.ConnectionFailedCount >= 2, what="connection retries")
    assert a.channels["c"].size == 500
    assert (k.EventDrainAttemptCount, k.ConnectionCreatedCount) == (0, 0)
    b = await agents(receiver(port), "b")
    got = await collect(b.channels["c"], 500)
    assert numbers(got) == list(range(500))


async def test_connection_reset_interval_reconnects(agents):
    port = free_port()
    await agents(receiver(port), "b")
    a = await agents(sender(port, 10, **{"reset-connection-interval": 1}), "a")
    k = a.sinks["k"].counter
    await wait_until(lambda: k.ConnectionCreatedCount >= 3, timeout=20, what="reconnections")
    assert k.ConnectionClosedCount >= 2 and k.EventWriteFail == 0


# -- thriftpy2's client → flumed source ------------------------------------------------------


@pytest.mark.parametrize("proto", ["compact", "binary"])
async def test_thriftpy2_client_append_and_append_batch(agents, proto):
    port = free_port()
    b = await agents(receiver(port), "b")

    def send() -> list[int]:
        client = thrift_client(port, proto)
        try:
            one = client.append(IDL.ThriftFlumeEvent(headers={"h": "é"}, body=b"\x00one"))
            batch = [
                IDL.ThriftFlumeEvent(headers={"i": str(i)}, body=b"%d" % i) for i in range(1000)
            ]
            return [one, client.appendBatch(batch), client.appendBatch([])]
        finally:
            client.close()

    assert await asyncio.to_thread(send) == [IDL.Status.OK] * 3
    got = await drain(b.channels["c"])
    assert got[0] == Event(b"\x00one", {"h": "é"})
    assert got[1:] == [Event(b"%d" % i, {"i": str(i)}) for i in range(1000)]
    r = b.sources["r"].counter
    assert (r.AppendAcceptedCount, r.AppendBatchAcceptedCount, r.EventAcceptedCount) == (1, 2, 1001)


async def test_thriftpy2_client_gets_failed_when_the_channel_is_full(agents):
    port = free_port()
    section = receiver(port, capacity=10)
    section["channels"]["c"].update(transactionCapacity=10, **{"keep-alive": 0.05})
    b = await agents(section, "b")

    def send() -> list[int]:
        client = thrift_client(port)
        try:
            ev = [IDL.ThriftFlumeEvent(headers={}, body=b"x")] * 8
            return [client.appendBatch(ev), client.appendBatch(ev)]
        finally:
            client.close()

    assert await asyncio.to_thread(send) == [IDL.Status.OK, IDL.Status.FAILED]
    assert b.channels["c"].size == 8
    assert b.sources["r"].counter.ChannelWriteFail == 1


async def test_unknown_method_is_answered_with_an_exception_and_the_connection_stays(
    agents, tmp_path: Path
):
    port = free_port()
    await agents(receiver(port), "b")
    idl = tmp_path / "ping.thrift"
    text = tp.IDL_PATH.read_text()
    idl.write_text(
        text.replace("ThriftSourceProtocol {", "ThriftSourceProtocol {\n  Status ping(),")
    )
    ping_idl = thriftpy2.load(str(idl), module_name="ping_thrift")

    def send() -> tuple[str, int]:
        client = thrift_client(port, service=ping_idl)
        try:
            with pytest.raises(TApplicationException) as ei:
                client.ping()
            ok = client.append(ping_idl.ThriftFlumeEvent(headers={}, body=b"after"))
            return ei.value.message, ok
        finally:
            client.close()

    message, ok = await asyncio.to_thread(send)
    assert "ping" in message and ok == IDL.Status.OK


# -- bad clients ----------------------------------------------------------------------------


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 10.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(100) == b""
    except ConnectionResetError:
        return True


async def test_garbage_and_half_open_clients_do_not_stop_a_good_one(agents, caplog):
    caplog.set_level(logging.WARNING, "flumed.sources.thrift")
    port = free_port()
    b = await agents(receiver(port, **{"frame-timeout": 0.5}), "b")
    idle_r, idle_w = await connect(port)  # connected, sends nothing: kept (a pooled client)
    half_r, half_w = await connect(port)
    half_w.write(b"\x00\x00\x01\x00\x82\x21")  # 256 bytes announced, 2 sent, then silence
    junk_r, junk_w = await connect(port)
    junk_w.write(b"GET / HTTP/1.1\r\nHost: flumed\r\n\r\n")
    assert await closed_by_server(junk_r)

    def send(i: int) -> int:
        client = thrift_client(port)
        try:
            return client.appendBatch([IDL.ThriftFlumeEvent(headers={}, body=b"%d" % i)])
        finally:
            client.close()

    assert await asyncio.to_thread(send, 1) == IDL.Status.OK  # while the half-open one waits
    assert await closed_by_server(half_r)
    assert await asyncio.to_thread(send, 2) == IDL.Status.OK
    assert numbers(await drain(b.channels["c"])) == [1, 2]
    assert idle_w.transport.is_closing() is False and not idle_r.at_eof()
    text = caplog.text
    assert "exceeds max-frame-bytes" in text and "b'GET '" in text
    assert "left a frame incomplete for 0.5s" in text
    assert b.sources["r"].counter.EventReadFail == 2
    for w in (idle_w, half_w, junk_w):
        w.close()


async def test_oversized_frame_and_malformed_message_close_with_a_reason(agents, caplog):
    caplog.set_level(logging.WARNING, "flumed.sources.thrift")
    port = free_port()
    b = await agents(receiver(port, **{"max-frame-bytes": 65536}), "b")
    r1, w1 = await connect(port)
    w1.write((65537).to_bytes(4, "big"))  # refused on its length, before any body
    assert await closed_by_server(r1)
    assert "frame of 65537 bytes exceeds max-frame-bytes 65536" in caplog.text
    r2, w2 = await connect(port)
    payload = tp.encode_append_batch([Event(b"x")], 1, "compact")[4:]
    bad = payload[:-6] + b"\x7f" + payload[-5:]  # corrupt the event's body field header
    w2.write(len(bad).to_bytes(4, "big") + bad)
    assert await closed_by_server(r2)
    assert "malformed Thrift message" in caplog.text
    r3, w3 = await connect(port)
    w3.write(b"\x82\x21\x01\x0bappendBatch")  # unframed compact
    assert await closed_by_server(r3)
    assert "unframed Thrift" in caplog.text
    r4, w4 = await connect(port)
    w4.write(b"\x00\x00\x00\x20" + b"\x82")  # a frame begun, then the client leaves
    w4.write_eof()
    assert await closed_by_server(r4)
    await wait_until(lambda: "closed inside a frame" in caplog.text)
    assert b.sources["r"].counter.EventReadFail == 4
    assert b.channels["c"].size == 0
    for w in (w1, w2, w3, w4):
        w.close()


async def test_client_that_half_closes_still_gets_its_answer(agents):
    port = free_port()
    b = await agents(receiver(port), "b")
    r, w = await connect(port)
    w.write(tp.encode_append_batch([Event(b"7")], 41, "binary"))
    w.write_eof()
    n = int.from_bytes(await r.readexactly(4), "big")
    status = tp.decode_reply(await r.readexactly(n), "appendBatch", 41, "binary")
    assert status is tp.Status.OK
    assert await closed_by_server(r)
    assert numbers(await drain(b.channels["c"])) == [7]
    w.close()


# -- flumed sink → thriftpy2's server ---------------------------------------------------------


class Recorder:
    """A ThriftSourceProtocol handler for thriftpy2's server: answers FAILED to its first
    batch, OK afterwards, and records what it accepted."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.calls = 0
        self.lock = threading.Lock()

    def append(self, event: Any) -> int:
        return self.appendBatch([event])

    def appendBatch(self, events: list[Any]) -> int:
        with self.lock:
            self.calls += 1
            if self.calls == 1:
                return IDL.Status.FAILED
            self.events += [(e.headers, e.body) for e in events]
            return IDL.Status.OK


@pytest.mark.parametrize("proto", ["compact", "binary"])
async def test_sink_against_thriftpy2_server(agents, proto):
    port = free_port()
    handler = Recorder()
    server = make_server(
        IDL.ThriftSourceProtocol,
        handler,
        "127.0.0.1",
        port,
        proto_factory=PROTOCOLS[proto](),
        trans_factory=TFramedTransportFactory(),
        client_timeout=None,
    )
    server.daemon = True
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until_sync(listening, what="thriftpy2 server")
    try:
        a = await agents(sender(port, 600, batch=50, protocol=proto), "a")
        await wait_until(lambda: len(handler.events) >= 600, what="600 events at thriftpy2")
        assert sorted(int(b) for _, b in handler.events) == list(range(600))
        assert a.sinks["k"].counter.EventWriteFail == 1  # the FAILED batch, sent again
    finally:
        server.close()
        server.trans.close()


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def pki(pki: Pki) -> dict[str, str]:
    """The shared test PKI (tests/conftest.py), by the names these tests use."""
    return {"server": pki.server, "ca": pki.ca, "other": pki.other_ca}


async def test_tls_delivery_and_bad_tls_clients(agents, pki, caplog):
    caplog.set_level(logging.WARNING, "flumed.sources.thrift")
    port = free_port()
    b = await agents(receiver(port, ssl=True, keystore=pki["server"], **{"frame-timeout": 1}), "b")
    a = await agents(sender(port, 2000, batch=200, ssl=True, truststore=pki["ca"]), "a")
    got = await collect(b.channels["c"], 2000)
    assert numbers(got) == list(range(2000))
    # A plain Thrift client on the TLS port, and a client that never starts TLS.
    r1, w1 = await connect(port)
    w1.write(tp.encode_append_batch([Event(b"plain")], 1, "compact"))
    assert await closed_by_server(r1)
    r2, w2 = await connect(port)
    assert await closed_by_server(r2)
    await wait_until(lambda: "left the TLS handshake incomplete for 1s" in caplog.text)
    assert "TLS handshake failed: WRONG_VERSION_NUMBER" in caplog.text
    assert a.sinks["k"].counter.EventDrainSuccessCount == 2000
    assert b.sources["r"].counter.OpenConnectionCount == 1  # the sink's; the bad ones gone
    for w in (w1, w2):
        w.close()


async def test_tls_sink_refuses_an_untrusted_server_and_takes_nothing(agents, pki):
    port = free_port()
    await agents(receiver(port, ssl=True, keystore=pki["server"]), "b")
    a = await agents(sender(port, 100, ssl=True, truststore=pki["other"]), "a")
    k = a.sinks["k"].counter
    await wait_until(lambda: k.ConnectionFailedCount >= 1, what="refused TLS connection")
    assert a.channels["c"].size == 100 and k.EventDrainAttemptCount == 0


async def test_tls_trust_all_certs_and_thriftpy2_tls_client(agents, pki):
    import ssl

    port = free_port()
    b = await agents(receiver(port, ssl=True, keystore=pki["server"]), "b")
    await agents(sender(port, 300, ssl=True, **{"trust-all-certs": True}), "a")
    await collect(b.channels["c"], 300)

    def send() -> int:
        ctx = ssl.create_default_context(cafile=pki["ca"])
        client = thrift_client(port, ssl_context=ctx)
        try:
            return client.appendBatch([IDL.ThriftFlumeEvent(headers={}, body=b"tls")])
        finally:
            client.close()

    assert await asyncio.to_thread(send) == IDL.Status.OK
    assert [e.body for e in await collect(b.channels["c"], 1)] == [b"tls"]


# -- configuration --------------------------------------------------------------------------


def problems(section: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as ei:
        build_agent({"agents": {"a": section}}, "a", "test.toml")
    return str(ei.value)


def test_config_errors_name_the_key():
    bad_src = receiver(1234, protocol="json", ssl=True, kerberos=True)
    bad_src["sources"]["r"]["keystore-type"] = "BKS"
    text = problems(bad_src)
    assert "key 'protocol'" in text and "compact" in text
    bad_src["sources"]["r"]["protocol"] = "binary"
    text = problems(bad_src)
    assert "needs 'keystore'" in text and "kerberos" in text and "'BKS'" in text
    assert "'request-timeout': must be >= 1000" in problems(sender(1, 1, **{"request-timeout": 10}))
    assert "'BKS'; expected one of" in problems(sender(1, 1, **{"truststore-type": "BKS"}))
    assert "missing required key 'hostname'" in problems(
        {**sender(1, 1), "sinks": {"k": {"type": "thrift", "channel": "c", "port": 1}}}
    )


def test_flume_keys_are_accepted(caplog):
    caplog.set_level(logging.WARNING)
    section = receiver(1234, threads=8, protocol="BINARY")
    section.update(
        {
            "sinks": {
                "k": {
                    "type": "org.apache.flume.sink.ThriftSink",
                    "channel": "c",
                    "hostname": "h",
                    "port": 1,
                    "reset-connection-interval": 30,
                    "maxConnections": 1,
                }
            }
        }
    )
    spec = build_agent({"agents": {"a": section}}, "a", "test.toml")
    assert spec.sources["r"].config.protocol == "binary"
    assert spec.sinks["k"].config.connection_reset_interval == 30
    assert "threads" in caplog.text and "maxConnections" in caplog.text


async def test_sink_reconnects_before_taking_when_the_receiver_closed_the_idle_connection(
    agents,
):
    from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
    from flumed.config.keys import parse
    from flumed.sinks.base import Status as SinkStatus
    from flumed.sinks.thrift import ThriftSink, ThriftSinkConfig

    port = free_port()
    b1 = Agent(build_agent({"agents": {"b": receiver(port)}}, "b", "test"), grace=1.0)
    await b1.start()
    ch = MemoryChannel("c", MemoryChannelConfig(capacity=10, transactionCapacity=10))
    await ch.start()
    sink = ThriftSink("k", parse(ThriftSinkConfig, {"hostname": "127.0.0.1", "port": port}, "k"))
    sink.channel = ch
    await sink.start()
    try:
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"1")])
        assert await sink.process() is SinkStatus.READY
        got = await drain(b1.channels["c"])
        await b1.stop()  # closes the sink's idle connection
        assert sink.client is not None
        await wait_until(lambda: not sink.client.connected, what="EOF seen by the sink")
        b2 = await agents(receiver(port), "b")
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"2")])
        assert await sink.process() is SinkStatus.READY  # no failed batch on the dead socket
        got += await drain(b2.channels["c"])
        assert numbers(got) == [1, 2]
        k = sink.counter
        assert (k.ConnectionCreatedCount, k.ConnectionClosedCount, k.EventWriteFail) == (2, 1, 0)
    finally:
        await sink.stop()
        await ch.stop()
