"""Kafka channel against a real broker: the transaction contract, and one channel topic
shared by two agents (one of them killed mid-run)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from flumed.channels.kafka import KafkaChannel, KafkaChannelConfig
from flumed.config.keys import parse
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.kafka.codec import decode_flume_event
from tests.integration.kafka.support import read_json_lines
from tests.integration.kafka_broker import consume, create_topics
from tests.util import free_port, wait_until_sync

REPO = Path(__file__).resolve().parents[3]
ENV = {"PYTHONPATH": str(REPO)}

#: tansu numbers a group's first generation 0 and aiokafka sends no LeaveGroup for it,
#: so a stopped member is noticed only when its session times out: keep that short.
FAST_GROUP = {
    "kafka.consumer.session.timeout.ms": "6000",
    "kafka.consumer.heartbeat.interval.ms": "1000",
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _channel(bootstrap: str, topic: str, **keys: str) -> KafkaChannel:
    flat = {
        "kafka.bootstrap.servers": bootstrap,
        "kafka.topic": topic,
        "kafka.consumer.group.id": _name("g"),
        **FAST_GROUP,
        **keys,
    }
    ch = KafkaChannel("c1", parse(KafkaChannelConfig, flat, "test"))
    await ch.start()
    return ch


async def _take(ch: KafkaChannel, n: int, timeout: float = 30.0) -> list[Event]:
    """Take exactly n events in one transaction (the first take may wait for the group)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with ch.transaction() as tx:
        got: list[Event] = []
        while len(got) < n:
            assert loop.time() < deadline, f"took {len(got)} of {n}"
            got += await tx.take_batch(n - len(got), 0.5)
    return got


async def test_transaction_contract(kafka_broker):
    """Puts are visible once committed; a rolled-back put leaves nothing; a rolled-back
    take is read again, in order; committed takes are not."""
    topic = _name("ch")
    await create_topics(kafka_broker.bootstrap, {topic: 1})
    ch = await _channel(kafka_broker.bootstrap, topic)
    try:
        with pytest.raises(RuntimeError):
            async with ch.transaction() as tx:
                await tx.put_batch([Event(b"never")])
                raise RuntimeError("source failed")
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"%d" % i, {"n": str(i), "key": "k"}) for i in range(10)])
        assert ch.counter.EventPutSuccessCount == 10

        first = await _take(ch, 4)
        assert [e.body for e in first] == [b"0", b"1", b"2", b"3"]
        assert first[0].headers == {"n": "0", "key": "k"}  # parseAsFlumeEvent keeps headers
        with pytest.raises(RuntimeError):
            async with ch.transaction() as tx:
                got = await tx.take_batch(3, 5)
                assert [e.body for e in got] == [b"4", b"5", b"6"]
                raise RuntimeError("next hop down")
        assert ch.counter.RollbackCount == 3
        rest = await _take(ch, 6)
        assert [e.body for e in rest] == [b"%d" % i for i in range(4, 10)]
        async with ch.transaction() as tx:
            assert await tx.take_batch(10, 0.3) == []
        assert ch.counter.EventTakeSuccessCount == 10
    finally:
        await ch.stop()
    # The rolled-back put produced nothing.
    records = await consume(kafka_broker.bootstrap, [topic], lambda r: len(r) >= 10)
    assert sorted(int(decode_flume_event(r.value).body) for r in records) == list(range(10))


async def test_plain_bodies_without_flume_event_format(kafka_broker):
    topic = _name("plain")
    await create_topics(kafka_broker.bootstrap, {topic: 1})
    ch = await _channel(kafka_broker.bootstrap, topic, parseAsFlumeEvent="false")
    try:
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"raw", {"key": "abc", "dropped": "x"})])
        (e,) = await _take(ch, 1)
        assert e.body == b"raw"
        assert e.headers == {"key": "abc"}  # only the record key survives, as in Flume
    finally:
        await ch.stop()
    (rec,) = await consume(kafka_broker.bootstrap, [topic], lambda r: len(r) >= 1)
    assert rec.value == b"raw" and rec.key == b"abc"


async def test_unreachable_broker_fails_put_and_take_with_channel_error():
    port = free_port()  # nothing listens here
    ch = await _channel(f"127.0.0.1:{port}", "t", **{"kafka.producer.request.timeout.ms": "500"})
    try:
        with pytest.raises(ChannelError, match="cannot reach Kafka"):
            async with ch.transaction() as tx:
                await tx.put_batch([Event(b"x")])
        with pytest.raises(ChannelError, match="cannot reach Kafka"):
            async with ch.transaction() as tx:
                await tx.take_batch(1, 0.1)
        # The take lock was released by the rollback: the next take is not stuck.
        assert not ch._take_lock.locked()
    finally:
        await ch.stop()


def _send_lines(port: int, start: int, stop: int, per_client: int = 500) -> None:
    """Numbered lines from clients of `per_client` lines each, one after the other: each
    client's lines are one put, and puts go to partitions in turn."""
    for first in range(start, stop, per_client):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"".join(b"%d\n" % i for i in range(first, min(first + per_client, stop))))
            s.shutdown(socket.SHUT_WR)
            s.settimeout(120)
            while s.recv(4096):
                pass


async def _group_members(bootstrap: str, group: str) -> int:
    """Members of a group once it is stable, else 0."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (resp,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (g,) = resp.groups
    return len(g[5]) if g[2] == "Stable" else 0


def _agent_conf(bootstrap: str, topic: str, group: str, out: Path, port: int | None) -> str:
    source = (
        f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = false
channels = ["c1"]
"""
        if port
        else ""
    )
    fast = "\n".join(f'"{k}" = {v}' for k, v in FAST_GROUP.items())
    return f"""{source}
[agents.a1.channels.c1]
type = "kafka"
"kafka.bootstrap.servers" = "{bootstrap}"
"kafka.topic" = "{topic}"
"kafka.consumer.group.id" = "{group}"
{fast}

[agents.a1.sinks.k1]
type = "tests.integration.kafka.support:JsonLinesSink"
channel = "c1"
path = "{out}"
batchSize = 500
"""


def test_two_agents_share_one_channel(agent_factory, kafka_broker, tmp_path):
    """Two agents, one channel topic, one group: they split the events; when one is
    killed, the other takes over its partitions. Every event is drained, and only a
    killed agent's uncommitted take can come out twice."""
    n = 20_000
    topic, group = _name("shared"), _name("g")
    asyncio.run(create_topics(kafka_broker.bootstrap, {topic: 4}))
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    port = free_port()
    agent_b = agent_factory(_agent_conf(kafka_broker.bootstrap, topic, group, out_b, None))
    agent_a = agent_factory(_agent_conf(kafka_broker.bootstrap, topic, group, out_a, port), env=ENV)
    wait_until_sync(
        lambda: asyncio.run(_group_members(kafka_broker.bootstrap, group)) == 2,
        60,
        "both agents in the group",
    )

    def drained() -> Counter[int]:
        return Counter(int(r["b"]) for p in (out_a, out_b) for r in read_json_lines(p))

    _send_lines(port, 0, n // 2)
    wait_until_sync(lambda: set(drained()) >= set(range(n // 2)), 60, "the first half")
    assert read_json_lines(out_a) and read_json_lines(out_b), "both agents took a share"

    agent_b.kill()
    _send_lines(port, n // 2, n)
    wait_until_sync(lambda: set(drained()) >= set(range(n)), 90, "everything, after the kill")
    counts = drained()
    assert set(counts) == set(range(n))
    assert sum(counts.values()) - n <= 2 * 500  # a take of 500 in flight, at most twice
    assert agent_a.counter("CHANNEL.c1", "EventPutSuccessCount") == n
