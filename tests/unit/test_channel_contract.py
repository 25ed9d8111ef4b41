"""The transaction contract, run against every channel type in CHANNEL_TYPES.

Each test gets `make(capacity, tx, keep_alive)` building a started channel of one type
(the fixture is parametrized by type name); a channel type joins by adding a factory here.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from flumed.channels.base import Channel
from flumed.channels.file import FileChannel, FileChannelConfig
from flumed.channels.jdbc import JdbcChannel, JdbcChannelConfig
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.channels.spillablememory import (
    SpillableMemoryChannel,
    SpillableMemoryChannelConfig,
)
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event

Make = Callable[..., Awaitable[Channel]]

#: The local servers of this machine (trust / empty-password auth, database `test`).
JDBC_PG = "jdbc:postgresql://127.0.0.1:5432/test?user=postgres"
JDBC_MYSQL = "jdbc:mysql://127.0.0.1:3306/test?user=root"


def ev(i: int) -> Event:
    return Event(b"%d" % i, {"n": str(i)})


def _memory(tmp: Path, capacity: int, tx: int, keep_alive: float) -> Channel:
    return MemoryChannel(
        "c1", MemoryChannelConfig(capacity=capacity, transactionCapacity=tx, keep_alive=keep_alive)
    )


def _file(tmp: Path, capacity: int, tx: int, keep_alive: float) -> Channel:
    cfg = FileChannelConfig(
        dataDirs=str(tmp / "data"),
        capacity=capacity,
        transactionCapacity=tx,
        keep_alive=keep_alive,
        minimumRequiredSpace=0,  # the contract must not depend on this disk's free space
    )
    return FileChannel("c1", cfg)


def _spillable(tmp: Path, capacity: int, tx: int, keep_alive: float) -> Channel:
    """Room for one transaction in memory, the rest of the capacity in the overflow: a
    put batch goes whole to one store, so the capacity the contract expects holds, and
    the tests that fill past one transaction span both stores (capacity == tx: memory
    only, as overflowCapacity = 0)."""
    mem = tx
    cfg = SpillableMemoryChannelConfig(
        memoryCapacity=mem,
        overflowCapacity=capacity - mem,
        overflowTimeout=keep_alive,
        transactionCapacity=tx,
        dataDirs=str(tmp / "data"),
        minimumRequiredSpace=0,
    )
    return SpillableMemoryChannel("c1", cfg)


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _jdbc(url: str, port: int) -> Callable[[Path, int, int, float], Channel]:
    def make(tmp: Path, capacity: int, tx: int, keep_alive: float) -> Channel:
        if not _reachable(port):
            pytest.skip(f"no database server on 127.0.0.1:{port} for the jdbc channel")
        cfg = JdbcChannelConfig(
            db_type="POSTGRESQL" if "postgresql" in url else "MYSQL",
            driver_url=url,
            maximum_capacity=capacity,
            transactionCapacity=tx,
            keep_alive=keep_alive,
            pollInterval=20,
            queue=f"contract_{uuid.uuid4().hex[:12]}",
        )
        return JdbcChannel("c1", cfg)

    return make


CHANNEL_TYPES: dict[str, Callable[[Path, int, int, float], Channel]] = {
    "memory": _memory,
    "file": _file,
    "jdbc-postgresql": _jdbc(JDBC_PG, 5432),
    "jdbc-mysql": _jdbc(JDBC_MYSQL, 3306),
    "spillablememory": _spillable,
}


@pytest.fixture(params=sorted(CHANNEL_TYPES))
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    """A factory of started channels of one type; all are stopped at the end."""
    made: list[Channel] = []

    async def factory(capacity: int = 10, tx: int = 5, keep_alive: float = 3.0) -> Channel:
        ch = CHANNEL_TYPES[request.param](tmp_path / str(len(made)), capacity, tx, keep_alive)
        made.append(ch)
        await ch.start()
        return ch

    yield factory
    for ch in made:
        await ch.stop()


async def take_all(ch, n: int = 1000) -> list[bytes]:
    out: list[bytes] = []
    while True:
        async with ch.transaction() as tx:
            got = await tx.take_batch(min(n, ch.transaction_capacity))
        if not got:
            return out
        out += [e.body for e in got]


async def test_commit_makes_put_visible(make: Make):
    ch = await make()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1), ev(2)])
        assert ch.size == 0
    assert ch.size == 2
    assert await take_all(ch) == [b"1", b"2"]
    assert ch.size == 0


async def test_rollback_on_exception_discards_put(make: Make):
    ch = await make()
    with pytest.raises(RuntimeError):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(1)])
            raise RuntimeError("boom")
    assert ch.size == 0


async def test_rolled_back_take_returns_to_head_in_order(make: Make):
    ch = await make()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(i) for i in range(5)])
    with pytest.raises(RuntimeError):
        async with ch.transaction() as tx:
            got = await tx.take_batch(3)
            assert [e.body for e in got] == [b"0", b"1", b"2"]
            raise RuntimeError("next hop down")
    assert await take_all(ch) == [b"0", b"1", b"2", b"3", b"4"]


async def test_takes_across_and_within_put_batches_keep_order(make: Make):
    ch = await make(capacity=20, tx=5)
    for b in ([0, 1, 2], [3, 4, 5], [6, 7, 8]):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(i) for i in b])
    with pytest.raises(RuntimeError):
        async with ch.transaction() as tx:
            assert [e.body for e in await tx.take_batch(4)] == [b"0", b"1", b"2", b"3"]
            raise RuntimeError("next hop down")
    async with ch.transaction() as tx:
        assert [e.body for e in await tx.take_batch(2)] == [b"0", b"1"]
    assert ch.size == 7
    assert await take_all(ch, 2) == [b"%d" % i for i in range(2, 9)]


async def test_transaction_capacity_enforced(make: Make):
    ch = await make(capacity=10, tx=3)
    async with ch.transaction() as tx:
        with pytest.raises(ChannelError, match="transactionCapacity"):
            await tx.put_batch([ev(i) for i in range(4)])
    assert ch.size == 0


async def test_take_bounded_by_transaction_capacity(make: Make):
    ch = await make(capacity=10, tx=3)
    for b in ([0, 1, 2], [3, 4]):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(i) for i in b])
    async with ch.transaction() as tx:
        got = await tx.take_batch(100)
    assert len(got) == 3


async def test_full_channel_refuses_whole_batch_after_keep_alive(make: Make):
    ch = await make(capacity=4, tx=4, keep_alive=0.05)
    async with ch.transaction() as tx:
        await tx.put_batch([ev(i) for i in range(3)])
    with pytest.raises(ChannelFullError, match="full"):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(10), ev(11)])
    # Nothing half-put.
    assert ch.size == 3
    assert await take_all(ch) == [b"0", b"1", b"2"]


async def test_put_waits_for_room_within_keep_alive(make: Make):
    ch = await make(capacity=2, tx=2, keep_alive=10)
    async with ch.transaction() as tx:
        await tx.put_batch([ev(0), ev(1)])

    async def put_more():
        async with ch.transaction() as tx:
            await tx.put_batch([ev(2)])

    task = asyncio.create_task(put_more())
    await asyncio.sleep(0)
    assert not task.done()
    async with ch.transaction() as tx:
        await tx.take_batch(1)
    await asyncio.wait_for(task, 5)
    assert await take_all(ch) == [b"1", b"2"]


async def test_taken_uncommitted_events_hold_capacity(make: Make):
    ch = await make(capacity=2, tx=2, keep_alive=0.01)
    async with ch.transaction() as tx:
        await tx.put_batch([ev(0), ev(1)])
    take = ch.transaction()
    take.begin()
    await take.take_batch(2)
    with pytest.raises(ChannelFullError):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(2)])
    await take.rollback()
    assert await take_all(ch) == [b"0", b"1"]


async def test_memory_byte_capacity():
    cfg = MemoryChannelConfig(
        capacity=100,
        transactionCapacity=100,
        byteCapacity=100,
        byteCapacityBufferPercentage=0,
        keep_alive=0.01,
    )
    ch = MemoryChannel("c1", cfg)
    await ch.start()
    async with ch.transaction() as tx:
        await tx.put_batch([Event(b"x" * 60)])
    with pytest.raises(ChannelFullError):
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"y" * 50)])
    async with ch.transaction() as tx:
        await tx.put_batch([Event(b"z" * 40)])
    assert ch.size == 2


async def test_take_waits_for_first_event(make: Make):
    ch = await make()

    async def later():
        await asyncio.sleep(0.01)
        async with ch.transaction() as tx:
            await tx.put_batch([ev(7)])

    t = asyncio.create_task(later())
    async with ch.transaction() as tx:
        got = await tx.take_batch(5, timeout=10)
    await t
    assert [e.body for e in got] == [b"7"]


async def test_take_timeout_returns_empty(make: Make):
    ch = await make()
    async with ch.transaction() as tx:
        assert await tx.take_batch(5, timeout=0.01) == []


async def test_put_and_take_in_one_transaction_refused(make: Make):
    ch = await make()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1)])
        with pytest.raises(ChannelError, match="not both"):
            await tx.take_batch(1)


async def test_transaction_used_by_other_task_refused(make: Make):
    ch = await make()
    tx = ch.transaction()
    tx.begin()

    async def other():
        await tx.put_batch([ev(1)])

    with pytest.raises(ChannelError, match="another task"):
        await asyncio.create_task(other())
    await tx.rollback()


async def test_commit_after_close_refused(make: Make):
    ch = await make()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1)])
    with pytest.raises(ChannelError):
        await tx.commit()


async def test_counters(make: Make):
    ch = await make()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1), ev(2)])
    async with ch.transaction() as tx:
        await tx.take_batch(1)
    v = ch.counter.values()
    assert v["EventPutSuccessCount"] == 2
    assert v["EventTakeSuccessCount"] == 1
    assert v["ChannelSize"] == 1
    assert v["ChannelFillPercentage"] == 10.0


def test_memory_config_rejects_tx_above_capacity():
    from flumed.config.keys import parse
    from flumed.errors import ConfigError

    with pytest.raises(ConfigError, match="transactionCapacity"):
        parse(MemoryChannelConfig, {"capacity": "10", "transactionCapacity": "20"}, "c1")
