"""Flume's StressSource and LoadBalancingChannelSelector."""

from __future__ import annotations

import pytest

from flumed.config.graph import build_agent
from flumed.config.properties import properties_to_document
from flumed.event import Event
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import build_selector
from flumed.sources.stress import StressSource
from tests.support.harness import SourceHarness
from tests.unit.test_routing import chan, drain, sel
from tests.util import wait_until


async def test_stress_offers_max_total_events_of_fixed_size():
    async with SourceHarness(
        StressSource, {"size": "64", "maxTotalEvents": "1050", "batchSize": "100"}
    ) as h:
        events = await h.events(1050)
        assert h.source.total == 1050
        assert {len(e.body) for e in events} == {64}
        assert len({e.body for e in events}) == 1  # one shared random body, as Flume's
        assert h.source.counter.EventAcceptedCount == 1050
        assert await h.take(10, 0.3) == []  # and then nothing more


async def test_stress_pushes_back_on_a_full_channel_and_loses_nothing():
    async with SourceHarness(
        StressSource,
        {"size": "8", "maxSuccessfulEvents": "500", "batchSize": "50"},
        capacity=100,
        transaction_capacity=100,
        keep_alive=0.01,
    ) as h:
        await wait_until(
            lambda: h.channel.size == 100 and h.source.counter.ChannelWriteFail > 0,
            what="the channel full and a batch refused",
        )
        got: list[Event] = []
        while len(got) < 500:
            got += await h.take(30, 1.0)
        assert len(got) == 500
        assert h.source.successful == 500
        assert h.source.counter.ChannelWriteFail > 0  # it was refused, then offered again
        assert await h.take(10, 0.3) == []


async def test_stress_rate_limited_still_stops_at_its_limit():
    async with SourceHarness(
        StressSource, {"size": "1", "maxTotalEvents": "40", "maxEventsPerSecond": "400"}
    ) as h:
        assert len(await h.events(40)) == 40


async def test_load_balancing_round_robin_each_event_to_one_channel():
    c1, c2, c3 = await chan("c1"), await chan("c2"), await chan("c3")
    p = ChannelProcessor(build_selector([c1, c2, c3], sel({"type": "load_balancing"})))
    await p.process_batch([Event(b"%d" % i) for i in range(10)])
    await p.process_batch([Event(b"%d" % i) for i in range(10, 14)])
    assert await drain(c1) == [b"0", b"3", b"6", b"9", b"12"]
    assert await drain(c2) == [b"1", b"4", b"7", b"10", b"13"]
    assert await drain(c3) == [b"2", b"5", b"8", b"11"]


async def test_load_balancing_random_spreads_every_event_once():
    chans = [await chan(f"c{i}", capacity=10_000, tx=10_000) for i in range(3)]
    p = ChannelProcessor(build_selector(chans, sel({"type": "load_balancing", "policy": "random"})))
    await p.process_batch([Event(b"%d" % i) for i in range(3000)])
    got = []
    for c in chans:
        async with c.transaction() as tx:
            got.append([e.body for e in await tx.take_batch(10_000)])
    assert all(len(g) > 500 for g in got)
    assert sorted(int(b) for g in got for b in g) == list(range(3000))


@pytest.mark.parametrize(
    "selector", ["load_balancing", "org.apache.flume.channel.LoadBalancingChannelSelector"]
)
def test_flume_properties_with_stress_and_load_balancing(selector):
    text = f"""
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = org.apache.flume.source.StressSource
a1.sources.r1.size = 10
a1.sources.r1.maxTotalEvents = 100
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = {selector}
a1.sources.r1.selector.policy = random
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = c2
"""
    spec = build_agent(properties_to_document(text), "a1", "flume.conf")
    assert spec.sources["r1"].selector.type == "load_balancing"
    assert spec.sources["r1"].selector.policy == "random"
    assert spec.sources["r1"].cls is StressSource
