"""The transaction contract, run against every channel type that has a factory here.

Other channel types (file, kafka) add a factory to CHANNEL_FACTORIES in their own
test module by importing `contract_tests`.
"""

from __future__ import annotations

import asyncio

import pytest

from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event


def ev(i: int) -> Event:
    return Event(b"%d" % i, {"n": str(i)})


async def make_memory(capacity: int = 10, tx: int = 5, **kw) -> MemoryChannel:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=capacity, transactionCapacity=tx, **kw))
    await ch.start()
    return ch


async def take_all(ch, n: int = 1000) -> list[bytes]:
    out: list[bytes] = []
    while True:
        async with ch.transaction() as tx:
            got = await tx.take_batch(min(n, ch.transaction_capacity))
        if not got:
            return out
        out += [e.body for e in got]


async def test_commit_makes_put_visible():
    ch = await make_memory()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1), ev(2)])
        assert ch.size == 0
    assert ch.size == 2
    assert await take_all(ch) == [b"1", b"2"]
    assert ch.size == 0


async def test_rollback_on_exception_discards_put():
    ch = await make_memory()
    with pytest.raises(RuntimeError):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(1)])
            raise RuntimeError("boom")
    assert ch.size == 0


async def test_rolled_back_take_returns_to_head_in_order():
    ch = await make_memory()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(i) for i in range(5)])
    with pytest.raises(RuntimeError):
        async with ch.transaction() as tx:
            got = await tx.take_batch(3)
            assert [e.body for e in got] == [b"0", b"1", b"2"]
            raise RuntimeError("next hop down")
    assert await take_all(ch) == [b"0", b"1", b"2", b"3", b"4"]


async def test_transaction_capacity_enforced():
    ch = await make_memory(capacity=10, tx=3)
    async with ch.transaction() as tx:
        with pytest.raises(ChannelError, match="transactionCapacity"):
            await tx.put_batch([ev(i) for i in range(4)])
    assert ch.size == 0


async def test_take_bounded_by_transaction_capacity():
    ch = await make_memory(capacity=10, tx=3)
    for b in ([0, 1, 2], [3, 4]):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(i) for i in b])
    async with ch.transaction() as tx:
        got = await tx.take_batch(100)
    assert len(got) == 3


async def test_full_channel_refuses_whole_batch_after_keep_alive():
    ch = await make_memory(capacity=4, tx=4, keep_alive=0.05)
    async with ch.transaction() as tx:
        await tx.put_batch([ev(i) for i in range(3)])
    with pytest.raises(ChannelFullError, match="full"):
        async with ch.transaction() as tx:
            await tx.put_batch([ev(10), ev(11)])
    # Nothing half-put.
    assert ch.size == 3
    assert await take_all(ch) == [b"0", b"1", b"2"]


async def test_put_waits_for_room_within_keep_alive():
    ch = await make_memory(capacity=2, tx=2, keep_alive=10)
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


async def test_taken_uncommitted_events_hold_capacity():
    ch = await make_memory(capacity=2, tx=2, keep_alive=0.01)
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


async def test_byte_capacity():
    ch = await make_memory(
        capacity=100, tx=100, byteCapacity=100, byteCapacityBufferPercentage=0, keep_alive=0.01
    )
    async with ch.transaction() as tx:
        await tx.put_batch([Event(b"x" * 60)])
    with pytest.raises(ChannelFullError):
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"y" * 50)])
    async with ch.transaction() as tx:
        await tx.put_batch([Event(b"z" * 40)])
    assert ch.size == 2


async def test_take_waits_for_first_event():
    ch = await make_memory()

    async def later():
        await asyncio.sleep(0.01)
        async with ch.transaction() as tx:
            await tx.put_batch([ev(7)])

    t = asyncio.create_task(later())
    async with ch.transaction() as tx:
        got = await tx.take_batch(5, timeout=10)
    await t
    assert [e.body for e in got] == [b"7"]


async def test_take_timeout_returns_empty():
    ch = await make_memory()
    async with ch.transaction() as tx:
        assert await tx.take_batch(5, timeout=0.01) == []


async def test_put_and_take_in_one_transaction_refused():
    ch = await make_memory()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1)])
        with pytest.raises(ChannelError, match="not both"):
            await tx.take_batch(1)


async def test_transaction_used_by_other_task_refused():
    ch = await make_memory()
    tx = ch.transaction()
    tx.begin()

    async def other():
        await tx.put_batch([ev(1)])

    with pytest.raises(ChannelError, match="another task"):
        await asyncio.create_task(other())
    await tx.rollback()


async def test_commit_after_close_refused():
    ch = await make_memory()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1)])
    with pytest.raises(ChannelError):
        await tx.commit()


async def test_counters():
    ch = await make_memory()
    async with ch.transaction() as tx:
        await tx.put_batch([ev(1), ev(2)])
    async with ch.transaction() as tx:
        await tx.take_batch(1)
    v = ch.counter.values()
    assert v["EventPutSuccessCount"] == 2
    assert v["EventTakeSuccessCount"] == 1
    assert v["ChannelSize"] == 1
    assert v["ChannelFillPercentage"] == 10.0


def test_config_rejects_tx_above_capacity():
    from flumed.config.keys import parse
    from flumed.errors import ConfigError

    with pytest.raises(ConfigError, match="transactionCapacity"):
        parse(MemoryChannelConfig, {"capacity": "10", "transactionCapacity": "20"}, "c1")
