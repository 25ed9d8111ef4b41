"""The agent graph in-process: start order, reload diffing, channel hand-over."""

from __future__ import annotations

import copy

from flumed.agent import Agent
from flumed.config.graph import build_agent
from flumed.event import Event
from flumed.lifecycle import LifecycleState
from tests.util import wait_until


def doc(capacity: int = 100, batch: int = 10, sink_type: str = "null") -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {
                    "r1": {"type": "seq", "totalEvents": 0, "channels": ["c1"]},
                },
                "channels": {"c1": {"type": "memory", "capacity": capacity}},
                "sinks": {"k1": {"type": sink_type, "channel": "c1", "batchSize": batch}},
            }
        }
    }


async def test_start_and_stop_order_and_states():
    agent = Agent(build_agent(doc(), "a1", "t"), grace=1)
    await agent.start()
    assert set(agent.health().values()) == {"RUNNING"}
    assert list(agent.health()) == ["SOURCE.r1", "CHANNEL.c1", "SINK.k1"]
    sink = agent.sinks["k1"]
    await agent.stop()
    assert sink.state is LifecycleState.STOPPED
    assert agent.health() == {}


async def test_reload_keeps_unchanged_and_hands_over_channel_content():
    agent = Agent(build_agent(doc(), "a1", "t"), grace=1)
    await agent.start()
    src, ch, sink = agent.sources["r1"], agent.channels["c1"], agent.sinks["k1"]
    runner = agent.runners["k1"]
    # 1. Nothing changed: nothing restarts.
    await agent.reload(build_agent(copy.deepcopy(doc()), "a1", "t"))
    assert agent.sources["r1"] is src and agent.channels["c1"] is ch
    assert agent.sinks["k1"] is sink and agent.runners["k1"] is runner

    # Stop the sink's runner so events stay in the channel up to the reload.
    await agent.runners.pop("k1").stop(1, drain=False)
    async with ch.transaction() as tx:
        await tx.put_batch([Event(b"%d" % i) for i in range(5)])
    # 2. The channel changes: source and sink restart, the events move over, in order.
    await agent.reload(build_agent(doc(capacity=200), "a1", "t"))
    ch2 = agent.channels["c1"]
    assert ch2 is not ch and ch2.state is LifecycleState.RUNNING
    assert agent.sources["r1"] is not src and agent.sinks["k1"] is not sink
    assert ch.state is LifecycleState.STOPPED
    # The new sink drains what the old channel held.
    await wait_until(lambda: agent.sinks["k1"].counter.EventDrainSuccessCount == 5)
    assert ch2.size == 0
    await agent.stop()


async def test_reload_hand_over_keeps_order(tmp_path):
    out = tmp_path / "out"

    def rdoc(capacity: int) -> dict:
        d = doc(capacity=capacity, sink_type="tests.support.record_sink:RecordSink")
        d["agents"]["a1"]["sinks"]["k1"]["path"] = str(out)
        return d

    agent = Agent(build_agent(rdoc(100), "a1", "t"), grace=1)
    await agent.start()
    await agent.runners.pop("k1").stop(1, drain=False)
    async with agent.channels["c1"].transaction() as tx:
        await tx.put_batch([Event(b"%d" % i) for i in range(50)])
    async with agent.channels["c1"].transaction() as tx:
        await tx.take_batch(3)
        await tx.rollback()
    await agent.reload(build_agent(rdoc(300), "a1", "t"))
    await wait_until(lambda: out.exists() and len(out.read_bytes().split()) == 50)
    assert out.read_bytes().split() == [b"%d" % i for i in range(50)]
    await agent.stop()


async def test_reload_changing_only_a_sink_keeps_source_and_channel():
    agent = Agent(build_agent(doc(), "a1", "t"), grace=1)
    await agent.start()
    src, ch, sink = agent.sources["r1"], agent.channels["c1"], agent.sinks["k1"]
    await agent.reload(build_agent(doc(batch=20), "a1", "t"))
    assert agent.sources["r1"] is src and agent.channels["c1"] is ch
    assert agent.sinks["k1"] is not sink and agent.sinks["k1"].config.batchSize == 20
    assert set(agent.health().values()) == {"RUNNING"}
    await agent.stop()


# -- plan_reload (pure) and reloads that fail ----------------------------------------


def _spec(d: dict):
    return build_agent(d, "a1", "t")


def test_plan_reload_nothing_changed_stops_nothing():
    from flumed.agent import plan_reload

    p = plan_reload(_spec(doc()), _spec(copy.deepcopy(doc())))
    assert (p.channels_restart, p.sources_stop, p.sinks_stop, p.runners_stop) == (
        frozenset(),
        frozenset(),
        frozenset(),
        frozenset(),
    )


def test_plan_reload_channel_change_restarts_its_source_sink_and_runner():
    from flumed.agent import plan_reload

    p = plan_reload(_spec(doc()), _spec(doc(capacity=200)))
    assert p.channels_restart == {"c1"}
    assert p.sources_stop == {"r1"} and p.sinks_stop == {"k1"} and p.runners_stop == {"k1"}


def test_plan_reload_sink_change_keeps_source_and_channel():
    from flumed.agent import plan_reload

    p = plan_reload(_spec(doc()), _spec(doc(batch=20)))
    assert p.channels_restart == set() and p.sources_stop == set()
    assert p.sinks_stop == {"k1"} and p.runners_stop == {"k1"}


def test_plan_reload_removed_and_grouped_components():
    from flumed.agent import plan_reload

    old = doc()
    old["agents"]["a1"]["sinks"]["k2"] = {"type": "null", "channel": "c1"}
    old["agents"]["a1"]["sinkgroups"] = {"g1": {"sinks": "k1 k2", "processor.type": "failover"}}
    new = copy.deepcopy(old)
    del new["agents"]["a1"]["sinkgroups"]
    del new["agents"]["a1"]["sinks"]["k2"]
    p = plan_reload(_spec(old), _spec(new))
    assert p.sinks_stop == {"k2"} and p.runners_stop == {"g1"}
    assert p.channels_restart == set() and p.sources_stop == set()


async def test_reload_whose_component_cannot_be_built_changes_nothing():
    from flumed.agent import ReloadError

    agent = Agent(build_agent(doc(), "a1", "t"), grace=1)
    await agent.start()
    before = (dict(agent.sources), dict(agent.channels), dict(agent.sinks), dict(agent.runners))
    bad = doc(capacity=200)  # the channel would restart ...
    bad["agents"]["a1"]["sources"]["r2"] = {  # ... but a new source cannot be built
        "type": "tests.support.broken:BrokenInitSource",
        "channels": ["c1"],
    }
    try:
        await agent.reload(build_agent(bad, "a1", "t"))
        raise AssertionError("expected ReloadError")
    except ReloadError as e:
        assert "running graph is unchanged" in str(e)
    assert (agent.sources, agent.channels, agent.sinks, agent.runners) == before
    assert set(agent.health().values()) == {"RUNNING"}
    # A later valid reload works.
    await agent.reload(build_agent(doc(capacity=300), "a1", "t"))
    assert agent.channels["c1"].capacity == 300
    assert set(agent.health().values()) == {"RUNNING"}
    await agent.stop()


async def test_component_failing_at_start_is_retried_by_the_next_reload():
    from flumed.errors import ComponentStartError

    agent = Agent(build_agent(doc(), "a1", "t"), grace=1)
    await agent.start()
    bad = doc()
    bad["agents"]["a1"]["sources"]["r2"] = {
        "type": "tests.support.broken:BrokenStartSource",
        "channels": ["c1"],
    }
    try:
        await agent.reload(build_agent(bad, "a1", "t"))
        raise AssertionError("expected ComponentStartError")
    except ComponentStartError as e:
        assert "source r2 failed to start" in str(e)
    assert "r2" not in agent.sources and "r1" in agent.sources
    good = doc()
    good["agents"]["a1"]["sources"]["r2"] = {
        "type": "seq",
        "totalEvents": 0,
        "channels": ["c1"],
    }
    await agent.reload(build_agent(good, "a1", "t"))
    assert set(agent.sources) == {"r1", "r2"}
    assert set(agent.health().values()) == {"RUNNING"}
    await agent.stop()
