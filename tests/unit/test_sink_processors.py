"""failover and load_balance over sinks whose next hop can be switched off."""

from __future__ import annotations

import pytest

from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.keys import parse
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.sinks.base import TAKE_TIMEOUT, Sink, Status
from flumed.sinks.failover import FailoverConfig, FailoverSinkProcessor
from flumed.sinks.load_balance import LoadBalanceConfig, LoadBalancingSinkProcessor


class Hop(Sink):
    """A sink whose next hop is a list; `up` switches it on and off."""

    def __init__(self, name: str) -> None:
        super().__init__(name, None)
        self.up = True
        self.got: list[bytes] = []

    async def process(self) -> Status:
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(2, TAKE_TIMEOUT)
            if not events:
                return Status.BACKOFF
            if not self.up:
                raise DeliveryError(f"{self.name} is down")
            self.got += [e.body for e in events]
        return Status.READY


async def setup(n: int) -> tuple[MemoryChannel, list[Hop]]:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=100, transactionCapacity=10))
    await ch.start()
    async with ch.transaction() as tx:
        await tx.put_batch([Event(b"%d" % i) for i in range(n)])
    hops = [Hop("k1"), Hop("k2")]
    for h in hops:
        h.channel = ch
    return ch, hops


async def test_failover_prefers_highest_priority_and_fails_over():
    ch, (k1, k2) = await setup(6)
    conf = parse(FailoverConfig, {"type": "failover", "priority.k1": "5", "priority.k2": "10"}, "g")
    p = FailoverSinkProcessor("g1", [k1, k2], conf)
    assert await p.process() is Status.READY
    assert k2.got == [b"0", b"1"] and k1.got == []
    k2.up = False
    assert await p.process() is Status.READY  # k2 fails, k1 takes the same events
    assert k1.got == [b"2", b"3"]
    assert p.active is k1
    await p.process()
    assert k1.got == [b"2", b"3", b"4", b"5"]
    assert ch.size == 0


async def test_failover_all_down_raises_and_keeps_events():
    ch, (k1, k2) = await setup(2)
    conf = parse(FailoverConfig, {"type": "failover"}, "g")
    p = FailoverSinkProcessor("g1", [k1, k2], conf)
    k1.up = k2.up = False
    with pytest.raises(DeliveryError, match="All sinks"):
        await p.process()
    assert ch.size == 2
    # Both are penalised now.
    with pytest.raises(DeliveryError, match="penalised"):
        await p.process()


async def test_load_balance_round_robin_spreads_batches():
    _, (k1, k2) = await setup(8)
    conf = parse(LoadBalanceConfig, {"type": "load_balance", "selector": "round_robin"}, "g")
    p = LoadBalancingSinkProcessor("g1", [k1, k2], conf)
    for _ in range(4):
        await p.process()
    assert k1.got == [b"0", b"1", b"4", b"5"]
    assert k2.got == [b"2", b"3", b"6", b"7"]


async def test_load_balance_backoff_skips_failed_sink():
    _, (k1, k2) = await setup(8)
    conf = parse(
        LoadBalanceConfig,
        {"type": "load_balance", "backoff": "true", "selector.maxTimeOut": "60000"},
        "g",
    )
    p = LoadBalancingSinkProcessor("g1", [k1, k2], conf)
    k1.up = False
    for _ in range(4):
        await p.process()
    assert k1.got == []
    assert k2.got == [b"%d" % i for i in range(8)]


async def test_load_balance_random_delivers_everything():
    _, (k1, k2) = await setup(8)
    conf = parse(LoadBalanceConfig, {"type": "load_balance", "selector": "random"}, "g")
    p = LoadBalancingSinkProcessor("g1", [k1, k2], conf)
    for _ in range(4):
        await p.process()
    assert sorted(k1.got + k2.got) == sorted(b"%d" % i for i in range(8))
