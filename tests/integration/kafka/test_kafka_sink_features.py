"""Kafka sink keys against a real broker, the sink driven in-process: topic escapes and
override, partition keys, header mapping, timestamps, Flume's Avro format, bad input."""

from __future__ import annotations

import uuid

import pytest

from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.keys import parse
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.kafka.codec import decode_flume_event
from flumed.sinks.kafka import KafkaSink, KafkaSinkConfig
from flumed.sources.base import Status
from tests.integration.kafka_broker import consume, create_topics
from tests.util import free_port


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _drain(bootstrap: str, events: list[Event], **keys: object) -> KafkaSink:
    """Put `events` in a memory channel and let a Kafka sink with `keys` drain it."""
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=1000, transactionCapacity=1000))
    await ch.start()
    flat = {"kafka.bootstrap.servers": bootstrap, **keys}
    sink = KafkaSink("k1", parse(KafkaSinkConfig, flat, "test"))
    sink.channel = ch
    await sink.start()
    try:
        async with ch.transaction() as tx:
            await tx.put_batch(events)
        while ch.size:
            await sink.process()
    finally:
        await sink.stop()
        await ch.stop()
    return sink


async def test_topic_escapes_header_mapping_and_timestamps(kafka_broker):
    base = _name("esc")
    await create_topics(kafka_broker.bootstrap, {f"{base}-web": 1})
    await _drain(
        kafka_broker.bootstrap,
        [Event(b"a", {"app": "web", "ts": "1700000000123", "h1": "x", "key": "kk"})],
        **{
            "kafka.topic": f"{base}-%{{app}}",
            "timestampHeader": "ts",
            "header.h1": "kafka-h1",
        },
    )
    (rec,) = await consume(kafka_broker.bootstrap, [f"{base}-web"], lambda r: len(r) >= 1)
    assert (rec.value, rec.key, rec.timestamp) == (b"a", b"kk", 1700000000123)
    assert rec.headers == (("kafka-h1", b"x"),)


async def test_topic_override_can_be_disabled(kafka_broker):
    fixed, other = _name("fixed"), _name("other")
    await create_topics(kafka_broker.bootstrap, {fixed: 1, other: 1})
    events = [Event(b"1", {"topic": other}), Event(b"2", {"where": other})]
    await _drain(
        kafka_broker.bootstrap, events, **{"kafka.topic": fixed, "allowTopicOverride": "false"}
    )
    recs = await consume(kafka_broker.bootstrap, [fixed], lambda r: len(r) >= 2)
    assert sorted(r.value for r in recs) == [b"1", b"2"]
    await _drain(
        kafka_broker.bootstrap,
        [Event(b"3", {"where": other})],
        **{
            "kafka.topic": fixed,
            "topicHeader": "where",
        },
    )
    recs = await consume(kafka_broker.bootstrap, [other], lambda r: len(r) >= 1)
    assert [r.value for r in recs] == [b"3"]


async def test_partition_keys_and_bad_partition_headers(kafka_broker):
    topic = _name("parts")
    await create_topics(kafka_broker.bootstrap, {topic: 3})
    events = [
        Event(b"to0", {"p": "0"}),
        Event(b"default", {}),
        Event(b"not-a-number", {"p": "nope"}),  # warned, counted, default partition
        Event(b"no-such-partition", {"p": "7"}),  # warned, counted, partitioned as unset
    ]
    sink = await _drain(
        kafka_broker.bootstrap,
        events,
        **{"kafka.topic": topic, "defaultPartitionId": "2", "partitionIdHeader": "p"},
    )
    recs = await consume(kafka_broker.bootstrap, [topic], lambda r: len(r) >= 4)
    where = {r.value: r.partition for r in recs}
    assert where[b"to0"] == 0
    assert where[b"default"] == 2
    assert where[b"not-a-number"] == 2
    assert b"no-such-partition" in where
    assert sink.counter.EventWriteFail == 2
    assert sink.counter.EventDrainSuccessCount == 4


async def test_flume_event_format_carries_headers(kafka_broker):
    topic = _name("avro")
    await create_topics(kafka_broker.bootstrap, {topic: 1})
    ev = Event(b"body", {"a": "1", "key": "k"})
    await _drain(
        kafka_broker.bootstrap, [ev], **{"kafka.topic": topic, "useFlumeEventFormat": True}
    )
    (rec,) = await consume(kafka_broker.bootstrap, [topic], lambda r: len(r) >= 1)
    assert rec.key == b"k"
    assert decode_flume_event(rec.value) == ev


async def test_bad_topic_header_and_oversized_events_cost_nothing_else(kafka_broker):
    topic = _name("bad")
    await create_topics(kafka_broker.bootstrap, {topic: 1})
    events = [
        Event(b"ok1"),
        Event(b"illegal topic name", {"topic": "no spaces allowed!"}),  # sent to kafka.topic
        Event(b"x" * 5000),  # larger than max.request.size: dropped, logged as an error
        Event(b"ok2"),
    ]
    sink = await _drain(
        kafka_broker.bootstrap,
        events,
        **{"kafka.topic": topic, "kafka.producer.max.request.size": "4096"},
    )
    recs = await consume(kafka_broker.bootstrap, [topic], lambda r: len(r) >= 3)
    assert sorted(r.value for r in recs) == [b"illegal topic name", b"ok1", b"ok2"]
    assert sink.counter.EventWriteFail == 2


async def test_unreachable_broker_rolls_back_the_take():
    port = free_port()  # nothing listens here
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=10, transactionCapacity=10))
    await ch.start()
    sink = KafkaSink(
        "k1", parse(KafkaSinkConfig, {"kafka.bootstrap.servers": f"127.0.0.1:{port}"}, "t")
    )
    sink.channel = ch
    await sink.start()
    try:
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"1"), Event(b"2")])
        with pytest.raises(DeliveryError, match="cannot reach Kafka"):
            await sink.process()
        assert ch.size == 2
        assert sink.counter.ConnectionFailedCount == 1
    finally:
        await sink.stop()
        await ch.stop()


async def test_empty_channel_backs_off(kafka_broker):
    ch = MemoryChannel("c1", MemoryChannelConfig())
    await ch.start()
    sink = KafkaSink(
        "k1", parse(KafkaSinkConfig, {"kafka.bootstrap.servers": kafka_broker.bootstrap}, "t")
    )
    sink.channel = ch
    await sink.start()
    try:
        assert await sink.process() is Status.BACKOFF
        assert sink.counter.BatchEmptyCount == 1
        assert sink.counter.ConnectionCreatedCount == 1
    finally:
        await sink.stop()
        await ch.stop()
