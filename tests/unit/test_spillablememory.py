"""The spillable memory channel: spilling, order across memory and overflow, the
overflowTimeout wait, overflowCapacity = 0, restarts, and a SIGKILLed real agent.

(The transaction contract runs on it in test_channel_contract.py.)
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from flumed.channels.spillablememory import SpillableMemoryChannel, SpillableMemoryChannelConfig
from flumed.config.graph import build_agent
from flumed.config.keys import parse
from flumed.errors import ChannelFullError, ConfigError
from flumed.event import Event
from flumed.workers import for_worker
from tests.util import wait_until, wait_until_sync


def ev(i: int) -> Event:
    return Event(b"%d" % i, {"n": str(i)})


def channel(tmp: Path, **kw) -> SpillableMemoryChannel:
    base = {
        "memoryCapacity": 100,
        "overflowCapacity": 100_000,
        "overflowTimeout": 0.05,
        "transactionCapacity": 50,
        "dataDirs": str(tmp / "overflow"),
        "minimumRequiredSpace": 0,
    }
    base.update(kw)
    return SpillableMemoryChannel("c1", SpillableMemoryChannelConfig(**base))


async def put(ch, numbers) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch([ev(i) for i in numbers])


async def drain(ch, batch: int = 37) -> list[int]:
    out: list[int] = []
    while True:
        async with ch.transaction() as tx:
            got = await tx.take_batch(batch)
        if not got:
            return out
        out += [int(e.body) for e in got]


async def test_burst_larger_than_memory_drains_in_order(tmp_path):
    ch = channel(tmp_path)
    await ch.start()
    try:
        for i in range(0, 1000, 50):
            await put(ch, range(i, i + 50))
        assert ch.memory_size == 100
        assert ch.overflow_size == 900
        assert ch.size == 1000
        # Memory frees as we take; later puts go to memory again, between overflow ones.
        got = await drain(ch, 30)
        for i in range(1000, 1300, 50):
            await put(ch, range(i, i + 50))
        got += await drain(ch, 70)
        assert got == list(range(1300))
        assert ch.size == 0 and not ch._order
        values = ch.counter.values()
        assert values["EventPutSuccessCount"] == values["EventTakeSuccessCount"] == 1300
        assert values["ChannelCapacity"] == 100 + 100_000 and values["Unhealthy"] == 0
    finally:
        await ch.stop()


async def test_concurrent_producers_and_takers_with_rollbacks_keep_order(tmp_path):
    """Two takers race with a producer, one of them rolling back now and then: every
    event comes out once, each batch in order, and the record's counts match the stores.
    (With two takers rolling back at once, the memory store's rollbacks would put one's
    events ahead of the other's, as the memory channel does.)"""
    ch = channel(tmp_path, memoryCapacity=60, transactionCapacity=20, overflowTimeout=0)
    await ch.start()
    rng = random.Random(7)
    committed: list[int] = []
    total = 3000
    done = asyncio.Event()
    spilled = 0

    async def producer() -> None:
        nonlocal spilled
        for i in range(0, total, 20):
            await put(ch, range(i, i + 20))
            spilled = max(spilled, ch.overflow_size)
            if i % 400 == 0:  # bursts of 400 events: more than memory holds
                await asyncio.sleep(0)
        done.set()

    async def taker(rollbacks: bool) -> None:
        while not (done.is_set() and ch.size == 0):
            try:
                async with ch.transaction() as tx:
                    got = await tx.take_batch(rng.randint(1, 20), 0.05)
                    if got and rollbacks and rng.random() < 0.2:
                        raise RuntimeError("next hop down")
                    if rng.random() < 0.3:
                        await asyncio.sleep(0)
            except RuntimeError:
                continue
            batch = [int(e.body) for e in got]
            assert batch == sorted(batch)
            committed.extend(batch)
            assert sum(n for _, n in ch._order) <= ch.size
        assert sum(n for _, n in ch._order) == ch.size

    try:
        await asyncio.wait_for(asyncio.gather(producer(), taker(True), taker(False)), 60)
        assert sorted(committed) == list(range(total))
        assert ch.size == 0 and not ch._order
        assert spilled, "the run never used the overflow"
    finally:
        await ch.stop()


async def test_put_waits_for_overflow_timeout_then_spills(tmp_path):
    ch = channel(tmp_path, memoryCapacity=2, transactionCapacity=2, overflowTimeout=1.0)
    await ch.start()
    try:
        await put(ch, [0, 1])
        task = asyncio.create_task(put(ch, [2]))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # waiting for room in memory
        assert ch.overflow_size == 0
        await asyncio.wait_for(task, 10)
        assert ch.memory_size == 2 and ch.overflow_size == 1
        # While the overflow holds events, a put that does not fit spills at once.
        task = asyncio.create_task(put(ch, [3]))
        await wait_until(task.done, what="an immediate spill")
        assert ch.overflow_size == 2
        assert await drain(ch) == [0, 1, 2, 3]
    finally:
        await ch.stop()


async def test_room_freed_during_the_wait_keeps_the_put_in_memory(tmp_path):
    ch = channel(tmp_path, memoryCapacity=2, transactionCapacity=2, overflowTimeout=30)
    await ch.start()
    try:
        await put(ch, [0, 1])
        task = asyncio.create_task(put(ch, [2]))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        async with ch.transaction() as tx:
            assert [e.body for e in await tx.take_batch(1)] == [b"0"]
        await asyncio.wait_for(task, 10)
        assert ch.overflow_size == 0 and ch.memory_size == 2
        assert await drain(ch) == [1, 2]
    finally:
        await ch.stop()


async def test_overflow_capacity_zero_is_a_memory_channel(tmp_path):
    ch = channel(tmp_path, memoryCapacity=3, overflowCapacity=0, transactionCapacity=3)
    assert ch.overflow is None
    await ch.start()
    try:
        await put(ch, [0, 1, 2])
        with pytest.raises(ChannelFullError, match="overflow is disabled"):
            await put(ch, [3])
        assert ch.size == 3
        assert await drain(ch) == [0, 1, 2]
    finally:
        await ch.stop()
    assert not (tmp_path / "overflow").exists()  # no file channel was opened


async def test_memory_capacity_zero_puts_everything_in_the_overflow(tmp_path):
    ch = channel(tmp_path, memoryCapacity=0)
    await ch.start()
    try:
        await put(ch, range(10))
        assert ch.overflow_size == 10 and ch.memory is None
        assert await drain(ch) == list(range(10))
    finally:
        await ch.stop()


async def test_restart_takes_the_overflow_first_and_clean_stop_keeps_memory(tmp_path):
    ch = channel(tmp_path)
    await ch.start()
    for i in range(0, 300, 50):
        await put(ch, range(i, i + 50))
    assert ch.memory_size == 100 and ch.overflow_size == 200
    await ch.stop()  # a clean stop writes memory's 100 into the overflow
    ch = channel(tmp_path)
    await ch.start()
    try:
        assert ch.overflow_size == 300
        await put(ch, [1000])
        got = await drain(ch)
        # The overflow's older events first, then memory's (spilled at stop), then new.
        assert got == [*range(100, 300), *range(100), 1000]
    finally:
        await ch.stop()


def test_config_keys_in_flume_spelling():
    cfg = parse(
        SpillableMemoryChannelConfig,
        {
            "memoryCapacity": "500",
            "overflowCapacity": "9000",
            "overflowTimeout": "1",
            "byteCapacity": "800000",
            "avgEventSize": "200",
            "overflowDeactivationThreshold": "10",
            "dataDirs": "/tmp/x",
            "checkpointDir": "/tmp/x",
            "fsyncPerTransaction": "false",
        },
        "channel c1",
    )
    assert cfg.memoryCapacity == 500 and cfg.overflow().capacity == 9000
    assert cfg.overflow().keep_alive == 0 and not cfg.overflow().fsyncPerTransaction
    with pytest.raises(ConfigError, match="memoryCapacity"):
        parse(SpillableMemoryChannelConfig, {"memoryCapacity": "-1"}, "channel c1")
    both_zero = SpillableMemoryChannelConfig(memoryCapacity=0, overflowCapacity=0)
    assert "both 0" in both_zero.check()[0]


def test_each_worker_process_gets_its_own_overflow_directory():
    doc = {
        "agents": {
            "a1": {
                "workers": 2,
                "sources": {
                    "n": {"type": "netcat", "bind": "127.0.0.1", "port": 0, "channels": ["c"]}
                },
                "channels": {"c": {"type": "spillablememory", "dataDirs": "/var/lib/o"}},
            }
        }
    }
    spec = build_agent(doc, "a1", "t.toml")
    assert for_worker(spec, 0).channels["c"].config.dataDirs == "/var/lib/o"
    assert for_worker(spec, 1).channels["c"].config.dataDirs == "/var/lib/o-worker1"


AGENT = """
[agents.a1.sources.r1]
type = "seq"
batchSize = 100
totalEvents = {total}
channels = ["c1"]
[agents.a1.channels.c1]
type = "SPILLABLEMEMORY"
memoryCapacity = {mem}
overflowCapacity = 1000000
overflowTimeout = 0.05
transactionCapacity = 100
dataDirs = "{data}"
minimumRequiredSpace = 0
[agents.a1.sinks.k1]
type = "avro"
hostname = "127.0.0.1"
port = {dead_port}
batch-size = 50
connect-timeout = 1000
channel = "c1"
"""

DRAIN = """
[agents.a1.sources.r1]
type = "seq"
totalEvents = 0
channels = ["c1"]
[agents.a1.channels.c1]
type = "org.apache.flume.channel.SpillableMemoryChannel"
memoryCapacity = {mem}
overflowCapacity = 1000000
transactionCapacity = 100
dataDirs = "{data}"
minimumRequiredSpace = 0
[agents.a1.sinks.k1]
type = "file_roll"
sink.directory = "{out}"
sink.rollInterval = 0
sink.batchSize = 100
channel = "c1"
"""


def test_sigkill_keeps_the_overflowed_events(agent_factory, tmp_path):
    """A real agent fills memory and spills; SIGKILL; a restarted agent delivers every
    overflowed event (the memory's are lost, as documented), in order."""
    from tests.util import free_port

    total, mem = 5000, 1000
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    a = agent_factory(AGENT.format(total=total, mem=mem, data=data, dead_port=free_port()))
    wait_until_sync(
        lambda: a.counter("CHANNEL.c1", "ChannelSize") == total,
        timeout=60,
        what="every event in the channel",
    )
    a.signal(signal.SIGKILL)
    a.proc.wait(30)
    b = agent_factory(DRAIN.format(mem=mem, data=data, out=out))
    want = [str(i) for i in range(mem, total)]
    wait_until_sync(
        lambda: b.counter("SINK.k1", "EventDrainSuccessCount") == len(want),
        timeout=60,
        what="the overflowed events at the sink",
    )
    assert b.terminate() == 0
    lines = [ln for f in sorted(out.iterdir()) for ln in f.read_text().splitlines()]
    assert lines == want


async def test_reload_keeps_every_event(tmp_path):
    """memory -> spillablememory hands the queue over; spillablememory with other keys
    gets the old one's memory through the overflow (written at its stop)."""
    from flumed.agent import Agent

    def doc(channel: dict) -> dict:
        return {
            "agents": {
                "a": {
                    "sources": {
                        "r": {"type": "seq", "totalEvents": 0, "channels": ["c"]},
                    },
                    "channels": {"c": channel},
                }
            }
        }

    spill = {
        "type": "spillablememory",
        "memoryCapacity": 100,
        "overflowTimeout": 0,
        "dataDirs": str(tmp_path / "o"),
        "minimumRequiredSpace": 0,
    }
    agent = Agent(build_agent(doc({"type": "memory", "capacity": 1000}), "a", "t"), grace=1.0)
    await agent.start()
    try:
        await put(agent.channels["c"], range(50))
        await agent.reload(build_agent(doc(spill), "a", "t"))
        ch = agent.channels["c"]
        assert isinstance(ch, SpillableMemoryChannel) and ch.memory_size == 50
        for i in range(50, 250, 50):
            await put(ch, range(i, i + 50))
        assert ch.overflow_size == 150
        await agent.reload(build_agent(doc({**spill, "memoryCapacity": 200}), "a", "t"))
        ch = agent.channels["c"]
        assert ch.overflow_size == 250 and ch.memory_size == 0
        # The overflow's older events, then what was in memory (written at the stop).
        assert await drain(ch) == [*range(100, 250), *range(100)]
    finally:
        await agent.stop()
