"""The scribe source over real sockets, against a Scribe client that thriftpy2 generates
from Scribe's IDL (flumed/rpc/scribe.thrift): batches with their category headers,
TRY_LATER on a full channel then success on retry, bad clients closed one by one."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import thriftpy2
from thriftpy2.protocol import TBinaryProtocolFactory, TCompactProtocolFactory
from thriftpy2.rpc import make_client
from thriftpy2.thrift import TApplicationException
from thriftpy2.transport import TFramedTransportFactory, TTransportException

from flumed.agent import Agent
from flumed.channels.base import Channel
from flumed.config.graph import build_agent
from flumed.errors import ConfigError
from flumed.event import Event
from flumed.rpc import scribe_protocol as sp
from tests.util import free_port, wait_until, wait_until_sync

SCRIBE = sp.load_idl()


@pytest.fixture
async def agents() -> AsyncIterator[Callable[..., Any]]:
    started: list[Agent] = []

    async def start(section: dict[str, Any], name: str = "a") -> Agent:
        agent = Agent(build_agent({"agents": {name: section}}, name, "test"), grace=2.0)
        await agent.start()
        started.append(agent)
        return agent

    yield start
    for a in reversed(started):
        await a.stop()


def receiver(port: int, capacity: int = 100_000, tx: int = 1000, **source: Any) -> dict[str, Any]:
    """scribe source → memory channel `c` with no sink: the test drains `c` itself."""
    return {
        "sources": {
            "r": {
                "type": "org.apache.flume.source.scribe.ScribeSource",
                "bind": "127.0.0.1",
                "port": port,
                "channels": ["c"],
                **source,
            }
        },
        "channels": {
            "c": {
                "type": "memory",
                "capacity": capacity,
                "transactionCapacity": tx,
                "keep-alive": 0.05,
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


def scribe_client(port: int, strict: bool = True, service: Any = None, compact: bool = False):
    proto = (
        TCompactProtocolFactory()
        if compact
        else TBinaryProtocolFactory(strict_read=strict, strict_write=strict)
    )
    return make_client(
        service or SCRIBE.Scribe,
        "127.0.0.1",
        port,
        proto_factory=proto,
        trans_factory=TFramedTransportFactory(),
        timeout=10_000,
    )


def entries(category: str, start: int, stop: int) -> list[Any]:
    return [SCRIBE.LogEntry(category=category, message=f"m{i}") for i in range(start, stop)]


def test_idl_matches_the_codec():
    sp.check_idl()


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "old-header"])
async def test_batches_arrive_with_their_category(agents, strict):
    port = free_port()
    a = await agents(receiver(port))

    def send() -> list[int]:
        client = scribe_client(port, strict)
        try:
            return [
                client.Log(entries("web", 0, 50)),
                client.Log(entries("db", 50, 120)),
                client.Log([]),
            ]
        finally:
            client.close()

    codes = await asyncio.to_thread(send)
    assert codes == [SCRIBE.ResultCode.OK] * 3
    got = await drain(a.channels["c"])
    assert [e.body for e in got] == [b"m%d" % i for i in range(120)]
    assert [e.headers for e in got] == [{"category": "web"}] * 50 + [{"category": "db"}] * 70
    counter = a.sources["r"].counter
    assert counter.EventAcceptedCount == 120 and counter.AppendBatchAcceptedCount == 3


async def test_full_channel_answers_try_later_and_the_retry_loses_nothing(agents):
    port = free_port()
    a = await agents(receiver(port, capacity=100, tx=100))
    ch = a.channels["c"]
    client = await asyncio.to_thread(scribe_client, port)
    try:
        assert await asyncio.to_thread(client.Log, entries("c", 0, 80)) == SCRIBE.ResultCode.OK
        batch = entries("c", 80, 110)  # 30 more do not fit in 100
        code = await asyncio.to_thread(client.Log, batch)
        assert code == SCRIBE.ResultCode.TRY_LATER
        assert ch.size == 80  # nothing of the refused call
        assert a.sources["r"].counter.ChannelWriteFail == 1
        got = await drain(ch)  # the sink catches up
        assert await asyncio.to_thread(client.Log, batch) == SCRIBE.ResultCode.OK  # retry
        got += await drain(ch)
    finally:
        client.close()
    assert [e.body for e in got] == [b"m%d" % i for i in range(110)]


async def test_a_call_larger_than_the_transaction_is_put_in_several(agents):
    port = free_port()
    a = await agents(receiver(port, capacity=1000, tx=10))
    client = await asyncio.to_thread(scribe_client, port)
    try:
        code = await asyncio.to_thread(client.Log, entries("c", 0, 25))
        assert code == SCRIBE.ResultCode.OK
    finally:
        client.close()
    assert [e.body for e in await drain(a.channels["c"])] == [b"m%d" % i for i in range(25)]


async def test_unknown_method_gets_an_exception_and_the_connection_stays(agents, tmp_path: Path):
    port = free_port()
    await agents(receiver(port))
    idl = tmp_path / "status.thrift"
    idl.write_text(
        sp.IDL_PATH.read_text().replace("service Scribe {", "service Scribe {\n  i32 getStatus(),")
    )
    with_status = thriftpy2.load(str(idl), module_name="status_thrift")

    def send() -> tuple[str, int]:
        client = scribe_client(port, service=with_status.Scribe)
        try:
            with pytest.raises(TApplicationException) as ei:
                client.getStatus()
            code = client.Log([with_status.LogEntry(category="c", message="after")])
            return ei.value.message, code
        finally:
            client.close()

    message, code = await asyncio.to_thread(send)
    assert "getStatus" in message and code == SCRIBE.ResultCode.OK


async def test_a_call_over_max_batch_events_gets_an_exception_and_nothing_is_put(agents):
    port = free_port()
    a = await agents(receiver(port, **{"max-batch-events": 100}))

    def send() -> tuple[str, int]:
        client = scribe_client(port)
        try:
            with pytest.raises(TApplicationException) as ei:
                client.Log([SCRIBE.LogEntry() for _ in range(101)])  # 1 byte each
            return ei.value.message, client.Log(entries("c", 0, 100))
        finally:
            client.close()

    message, code = await asyncio.to_thread(send)
    assert "Log call of 101 entries exceeds the limit of 100 (max-batch-events)" in message
    assert code == SCRIBE.ResultCode.OK
    assert len(await drain(a.channels["c"])) == 100
    assert a.sources["r"].counter.EventReadFail == 1


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 10.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(100) == b""
    except ConnectionResetError:
        return True


async def test_garbage_oversized_and_compact_clients_close_only_their_connection(agents, caplog):
    caplog.set_level(logging.WARNING, "flumed.sources")
    port = free_port()
    a = await agents(receiver(port, maxReadBufferBytes=4096))
    good = await asyncio.to_thread(scribe_client, port)  # connected before, used after
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"GET / HTTP/1.1\r\nHost: flumed\r\n\r\n")
        assert await closed_by_server(r1)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write((4097).to_bytes(4, "big"))  # refused from the length, before the body
        assert await closed_by_server(r2)
        big = scribe_client(port)
        with pytest.raises(TTransportException):  # closed by the source
            await asyncio.to_thread(big.Log, [SCRIBE.LogEntry(category="c", message="x" * 5000)])
        big.close()
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)
        bad = b"\x80\x01\x00\x01\x00\x00\x00\x03Log\x00\x00\x00\x01\x0f\x00\x01\x0c\x00\x00\x00\x32"
        w3.write(len(bad).to_bytes(4, "big") + bad)  # 50 entries announced, none sent
        assert await closed_by_server(r3)
        compact = scribe_client(port, compact=True)
        with pytest.raises(TTransportException):
            await asyncio.to_thread(compact.Log, entries("c", 0, 1))
        compact.close()
        code = await asyncio.to_thread(good.Log, entries("ok", 0, 3))
        assert code == SCRIBE.ResultCode.OK
    finally:
        good.close()
    await wait_until(lambda: a.sources["r"].counter.EventReadFail == 5, what="5 read failures")
    text = caplog.text
    assert "exceeds maxReadBufferBytes 4096" in text
    assert "LogEntry list count 50 exceeds what the frame can hold" in text
    assert "compact protocol" in text
    assert [e.body for e in await drain(a.channels["c"])] == [b"m0", b"m1", b"m2"]
    for w in (w1, w2, w3):
        w.close()


def test_flume_keys(caplog):
    caplog.set_level(logging.WARNING)
    spec = build_agent(
        {
            "agents": {
                "a": {
                    "sources": {
                        "r": {
                            "type": "scribe",
                            "port": 0,
                            "maxReadBufferBytes": 100000,
                            "workerThreads": 5,
                            "channels": ["c"],
                        }
                    },
                    "channels": {"c": {"type": "memory"}},
                }
            }
        },
        "a",
        "test",
    )
    assert spec.sources["r"] is not None
    assert "workerThreads" in caplog.text
    with pytest.raises(ConfigError, match="maxReadBufferBytes"):
        build_agent(
            {
                "agents": {
                    "a": {
                        "sources": {
                            "r": {"type": "scribe", "maxReadBufferBytes": 10, "channels": ["c"]}
                        },
                        "channels": {"c": {"type": "memory"}},
                    }
                }
            },
            "a",
            "test",
        )


AGENT = """
[agents.a1.sources.r1]
type = "scribe"
bind = "127.0.0.1"
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "file"
dataDirs = "{data}"
minimumRequiredSpace = 0
transactionCapacity = 1000
[agents.a1.sinks.k1]
type = "file_roll"
sink.directory = "{out}"
sink.rollInterval = 0
sink.batchSize = 500
channel = "c1"
"""


class RetryingScribeClient:
    """Sends Log calls of numbered messages, each until it is answered OK: a TRY_LATER
    or a dropped connection (the agent was killed) sends the same call again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: Any = None
        self.sent = 0  # calls answered OK
        self.retries = 0

    def log(self, batch: list[Any], deadline: float) -> None:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"call {self.sent} never answered OK")
            try:
                if self.client is None:
                    self.client = scribe_client(self.port)
                if self.client.Log(batch) == SCRIBE.ResultCode.OK:
                    self.sent += 1
                    return
            except (TTransportException, OSError):
                if self.client is not None:
                    self.client.close()
                self.client = None
                time.sleep(0.05)  # the agent restarts: reconnect shortly
            self.retries += 1


def test_sigkill_mid_stream_loses_nothing(agent_factory, tmp_path):
    """A real agent (scribe -> file channel -> file_roll) SIGKILLed in the middle of a
    client's stream of calls: the client's next call fails, it reconnects to the restarted
    agent and sends again; every message answered OK is in the output, duplicates only
    from what the sink had written but not committed (and a call whose answer was lost)."""
    port, calls, size = free_port(), 60, 100
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    conf = AGENT.format(port=port, data=data, out=out)
    a = agent_factory(conf)
    sender = RetryingScribeClient(port)
    deadline = time.monotonic() + 120

    killed = threading.Event()

    def send_all() -> None:
        for c in range(calls):
            if c == 20:
                killed.wait(60)  # the next call meets the killed agent's closed connection
            sender.log(entries("k", c * size, (c + 1) * size), deadline)
        sender.client.close()

    thread = threading.Thread(target=send_all)
    thread.start()
    wait_until_sync(lambda: sender.sent >= 20, timeout=60, what="20 calls answered")
    a.kill()
    killed.set()
    b = agent_factory(conf)
    thread.join(120)
    assert not thread.is_alive() and sender.sent == calls
    assert sender.retries >= 1  # the kill was felt

    def lines() -> list[str]:
        return [ln for f in sorted(out.iterdir()) for ln in f.read_text().splitlines()]

    want = {f"m{i}" for i in range(calls * size)}
    wait_until_sync(lambda: want <= set(lines()), timeout=60, what="every message written")
    assert b.terminate() == 0
    got = lines()
    assert set(got) == want
    # Duplicates: the call in flight at the kill (committed, answer lost) and events
    # the sink wrote but had not committed its take of.
    assert len(got) - len(want) <= size + 500
