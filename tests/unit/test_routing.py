"""Selectors and the channel processor."""

from __future__ import annotations

import pytest

from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.keys import parse
from flumed.errors import ChannelFullError, ConfigError
from flumed.event import Event
from flumed.interceptors.base import Interceptor
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import SelectorConfig, build_selector


async def chan(name: str, capacity: int = 100, tx: int = 100, keep_alive: float = 0.01):
    c = MemoryChannel(
        name, MemoryChannelConfig(capacity=capacity, transactionCapacity=tx, keep_alive=keep_alive)
    )
    await c.start()
    return c


async def drain(ch) -> list[bytes]:
    async with ch.transaction() as tx:
        return [e.body for e in await tx.take_batch(1000)]


def sel(flat: dict) -> SelectorConfig:
    return parse(SelectorConfig, flat, "selector")


async def test_replicating_puts_every_event_in_every_channel():
    c1, c2 = await chan("c1"), await chan("c2")
    p = ChannelProcessor(build_selector([c1, c2], sel({})))
    await p.process_batch([Event(b"a"), Event(b"b")])
    assert await drain(c1) == [b"a", b"b"]
    assert await drain(c2) == [b"a", b"b"]


async def test_replicating_optional_channel_failure_is_not_raised():
    c1, c2 = await chan("c1"), await chan("c2", capacity=1, tx=1)
    p = ChannelProcessor(build_selector([c1, c2], sel({"optional": "c2"})))
    await p.process_batch([Event(b"a"), Event(b"b")])
    assert await drain(c1) == [b"a", b"b"]
    assert await drain(c2) == [b"a"]
    assert p.optional_failures == 1


async def test_required_channel_full_raises_with_accepted_count():
    c1 = await chan("c1", capacity=3, tx=2)
    p = ChannelProcessor(build_selector([c1], sel({})))
    with pytest.raises(ChannelFullError) as ei:
        await p.process_batch([Event(b"%d" % i) for i in range(5)])
    # Two transactions of 2: the first fits, the second does not.
    assert ei.value.accepted == 2
    assert await drain(c1) == [b"0", b"1"]


async def test_batch_larger_than_transaction_capacity_is_split():
    c1 = await chan("c1", capacity=100, tx=3)
    p = ChannelProcessor(build_selector([c1], sel({})))
    await p.process_batch([Event(b"%d" % i) for i in range(10)])
    assert c1.size == 10


async def test_multiplexing_routes_on_header_with_default_and_optional():
    cs = [await chan(n) for n in ("c1", "c2", "c3", "c4")]
    config = sel(
        {
            "type": "multiplexing",
            "header": "state",
            "mapping.CZ": "c1",
            "mapping.US": "c2 c3",
            "optional.CZ": "c4",
            "default": "c4",
        }
    )
    p = ChannelProcessor(build_selector(cs, config))
    events = [
        Event(b"cz", {"state": "CZ"}),
        Event(b"us", {"state": "US"}),
        Event(b"xx", {"state": "XX"}),
        Event(b"none"),
    ]
    await p.process_batch(events)
    assert await drain(cs[0]) == [b"cz"]
    assert await drain(cs[1]) == [b"us"]
    assert await drain(cs[2]) == [b"us"]
    assert sorted(await drain(cs[3])) == sorted([b"cz", b"xx", b"none"])


async def test_multiplexing_optional_only_value_goes_to_default_as_required():
    c1, c2 = await chan("c1"), await chan("c2")
    config = sel({"type": "multiplexing", "header": "h", "optional.A": "c2", "default": "c1"})
    p = ChannelProcessor(build_selector([c1, c2], config))
    await p.process_batch([Event(b"a", {"h": "A"})])
    assert await drain(c1) == [b"a"]
    assert await drain(c2) == [b"a"]


def test_selector_config_errors():
    with pytest.raises(ConfigError, match="selector: key 'type'"):
        sel({"type": "broadcast"})
    with pytest.raises(ConfigError, match=r"unknown key 'mappings\.US'"):
        sel({"type": "multiplexing", "mappings.US": "c1"})


class _DropOdd(Interceptor):
    def intercept(self, events):
        return [e for e in events if int(e.body) % 2 == 0]


class _DropAll(Interceptor):
    def intercept(self, events):
        return []


async def test_interceptors_run_in_order_and_may_drop():
    c1 = await chan("c1")
    p = ChannelProcessor(build_selector([c1], sel({})), [_DropOdd("i1", None)])
    await p.process_batch([Event(b"%d" % i) for i in range(6)])
    assert await drain(c1) == [b"0", b"2", b"4"]
    p2 = ChannelProcessor(
        build_selector([c1], sel({})), [_DropOdd("i1", None), _DropAll("i2", None)]
    )
    await p2.process_batch([Event(b"0")])
    assert c1.size == 0
