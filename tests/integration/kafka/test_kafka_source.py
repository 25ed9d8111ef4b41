"""Kafka source against a real broker: Flume's headers, offsets that survive a restart,
a full channel that pauses consumption, Flume's Avro event format, topic regexes."""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaProducer

from flumed.agent import Agent
from flumed.config.graph import build_agent
from flumed.event import Event
from flumed.kafka.codec import decode_flume_event, encode_flume_event
from flumed.kafka.produce import Partitioner, produce
from tests.integration.kafka.support import read_json_lines
from tests.integration.kafka_broker import consume, create_topics
from tests.util import wait_until, wait_until_sync

REPO = Path(__file__).resolve().parents[3]
ENV = {"PYTHONPATH": str(REPO)}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _produce(bootstrap: str, topic: str, start: int, stop: int, **kw) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **kw)
    await producer.start()
    try:
        futs = [
            await producer.send(topic, b"%d" % i, key=b"k%d" % (i % 5)) for i in range(start, stop)
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def _source_conf(
    bootstrap: str,
    topic: str,
    group: str,
    out: Path,
    extra: str = "",
    channel: str = "capacity = 10000\ntransactionCapacity = 1000",
    sink: str = "",
) -> str:
    return f"""
[agents.a1.sources.r1]
type = "kafka"
channels = ["c1"]
"kafka.bootstrap.servers" = "{bootstrap}"
"kafka.topics" = "{topic}"
"kafka.consumer.group.id" = "{group}"
"kafka.consumer.auto.offset.reset" = "earliest"
# tansu numbers a group's first generation 0, and aiokafka sends no LeaveGroup for
# generation 0: a stopped member is only noticed when its session times out.
"kafka.consumer.session.timeout.ms" = 6000
"kafka.consumer.heartbeat.interval.ms" = 1000
batchSize = 500
batchDurationMillis = 200
backoffSleepIncrement = 50
maxBackoffSleep = 200
{extra}

[agents.a1.channels.c1]
type = "memory"
{channel}

[agents.a1.sinks.k1]
type = "tests.integration.kafka.support:JsonLinesSink"
channel = "c1"
path = "{out}"
{sink}
"""


def _bodies(out: Path) -> Counter[int]:
    return Counter(int(r["b"]) for r in read_json_lines(out))


def test_offsets_resume_after_restart(agent_factory, kafka_broker, tmp_path):
    """Every message exactly once across a restart, with Flume's headers set."""
    n = 20_000
    topic, group = _name("src"), _name("g")
    asyncio.run(create_topics(kafka_broker.bootstrap, {topic: 3}))
    out = tmp_path / "out.jsonl"
    asyncio.run(_produce(kafka_broker.bootstrap, topic, 0, n // 2))
    agent = agent_factory(_source_conf(kafka_broker.bootstrap, topic, group, out), env=ENV)
    wait_until_sync(lambda: len(_bodies(out)) > 0, 60, "the first events")
    assert agent.terminate() == 0
    read_before = sum(_bodies(out).values())
    # More arrives while the agent is down; the restarted agent goes on from its offsets.
    asyncio.run(_produce(kafka_broker.bootstrap, topic, n // 2, n))
    agent.start()
    wait_until_sync(lambda: len(_bodies(out)) >= n, 60, "every message")
    assert agent.terminate() == 0
    bodies = _bodies(out)
    assert set(bodies) == set(range(n))
    assert max(bodies.values()) == 1, "a message was delivered twice"
    assert read_before < n
    # Headers: the record's topic, partition, offset, key and timestamp.
    records = asyncio.run(consume(kafka_broker.bootstrap, [topic], lambda r: len(r) >= n))
    where = {int(r.value): r for r in records}
    for line in read_json_lines(out):
        h, rec = line["h"], where[int(line["b"])]
        assert h["topic"] == topic
        assert h["partition"] == str(rec.partition)
        assert h["offset"] == str(rec.offset)
        assert h["key"] == rec.key.decode()
        assert h["timestamp"] == str(rec.timestamp)


def test_full_channel_pauses_consumption(agent_factory, kafka_broker, tmp_path):
    """A channel far smaller than the source's batches: the source is refused again and
    again, holds its batch, and still every message arrives exactly once."""
    n = 2_000
    topic, group = _name("full"), _name("g")
    asyncio.run(create_topics(kafka_broker.bootstrap, {topic: 2}))
    asyncio.run(_produce(kafka_broker.bootstrap, topic, 0, n))
    out = tmp_path / "out.jsonl"
    # Room for three sink batches; the source offers 500 at a time, and a put waits
    # only 10 ms for room: most offers are refused, many in part.
    conf = _source_conf(
        kafka_broker.bootstrap,
        topic,
        group,
        out,
        channel="capacity = 300\ntransactionCapacity = 100\nkeep-alive = 0.01",
        sink="batchSize = 100\ndelay = 0.05",
    )
    agent = agent_factory(conf, env=ENV)
    wait_until_sync(lambda: len(_bodies(out)) >= n, 90, "every message")
    bodies = _bodies(out)
    assert set(bodies) == set(range(n))
    assert max(bodies.values()) == 1
    assert agent.counter("SOURCE.r1", "ChannelWriteFail") > 0
    assert agent.counter("SOURCE.r1", "EventAcceptedCount") == n


def _doc(text: str) -> dict:
    return tomllib.loads(text)


async def test_flume_event_format_round_trip_and_unreadable_records(kafka_broker, tmp_path):
    """Sink with useFlumeEventFormat → Kafka → source with useFlumeEventFormat keeps
    headers; a record that is not an AvroFlumeEvent is counted and skipped."""
    topic, group = _name("avro"), _name("g")
    await create_topics(kafka_broker.bootstrap, {topic: 1})
    # One unreadable record first: it must not block the rest.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    await producer.send_and_wait(topic, b"\xff\xff\xff not avro")
    good = Event(b"payload", {"h1": "v1", "topic": "ignored-topic-header"})
    await producer.send_and_wait(topic, encode_flume_event(good), key=b"kk")
    await producer.stop()
    out = tmp_path / "out.jsonl"
    conf = _source_conf(kafka_broker.bootstrap, topic, group, out, "useFlumeEventFormat = true")
    agent = Agent(build_agent(_doc(conf), "a1", "test"))
    await agent.start()
    try:
        await wait_until(lambda: len(read_json_lines(out)) >= 1, 60)
        src = agent.sources["r1"]
        assert src.counter.EventReadFail == 1
    finally:
        await agent.stop()
    (line,) = read_json_lines(out)
    assert line["b"] == "payload"
    h = line["h"]
    assert h["h1"] == "v1"
    # Headers carried in the event win over the source's own, as in Flume.
    assert h["topic"] == "ignored-topic-header"
    assert h["key"] == "kk"
    assert h["offset"] == "1"


async def test_topics_regex_subscribes_to_matching_topics(kafka_broker, tmp_path):
    base = _name("rx")
    t1, t2, other = f"{base}-a", f"{base}-b", _name("other")
    await create_topics(kafka_broker.bootstrap, {t1: 1, t2: 1, other: 1})
    for t, i in ((t1, 1), (t2, 2), (other, 3)):
        await _produce(kafka_broker.bootstrap, t, i, i + 1)
    out = tmp_path / "out.jsonl"
    conf = _source_conf(kafka_broker.bootstrap, "unused", _name("g"), out)
    conf = conf.replace('"kafka.topics" = "unused"', f'"kafka.topics.regex" = "^{base}-.*"')
    agent = Agent(build_agent(_doc(conf), "a1", "test"))
    await agent.start()
    try:
        await wait_until(lambda: len(read_json_lines(out)) >= 2, 60)
    finally:
        await agent.stop()
    got = {(r["h"]["topic"], r["b"]) for r in read_json_lines(out)}
    assert got == {(t1, "1"), (t2, "2")}


def test_sigkill_mid_run_loses_nothing_with_a_kafka_channel(agent_factory, kafka_broker):
    """kafka source → kafka channel, killed with SIGKILL mid-run and restarted: offsets are
    committed only after the channel holds the batch, so nothing is lost, and only the
    batch in flight at the kill is put twice."""
    n, batch = 100_000, 100
    src, chan = _name("in"), _name("chan")
    asyncio.run(create_topics(kafka_broker.bootstrap, {src: 2, chan: 2}))
    asyncio.run(_produce_fast(kafka_broker.bootstrap, src, n))
    conf = f"""
[agents.a1.sources.r1]
type = "kafka"
channels = ["c1"]
"kafka.bootstrap.servers" = "{kafka_broker.bootstrap}"
"kafka.topics" = "{src}"
"kafka.consumer.group.id" = "{_name("g")}"
"kafka.consumer.auto.offset.reset" = "earliest"
"kafka.consumer.session.timeout.ms" = 6000
"kafka.consumer.heartbeat.interval.ms" = 1000
batchSize = {batch}
backoffSleepIncrement = 50
maxBackoffSleep = 200

[agents.a1.channels.c1]
type = "kafka"
"kafka.bootstrap.servers" = "{kafka_broker.bootstrap}"
"kafka.topic" = "{chan}"
"""
    agent = agent_factory(conf)
    wait_until_sync(
        lambda: agent.counter("CHANNEL.c1", "EventPutSuccessCount") >= n // 5,
        60,
        "a fifth of the messages in the channel",
    )
    before = agent.counter("CHANNEL.c1", "EventPutSuccessCount")
    agent.kill()
    assert before < n, "the run ended before the kill; nothing was tested"
    agent.start()
    records = asyncio.run(
        consume(
            kafka_broker.bootstrap,
            [chan],
            lambda r: len({decode_flume_event(x.value).body for x in r}) >= n,
            timeout=90,
        )
    )
    bodies = Counter(int(decode_flume_event(r.value).body) for r in records)
    assert set(bodies) == set(range(n))
    assert sum(bodies.values()) - n <= batch, "more than the batch in flight came twice"


async def _produce_fast(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=512 << 10)
    await producer.start()
    try:
        part = Partitioner()
        for first in range(0, n, 10_000):
            recs = [
                (topic, None, None, b"%d" % i, None, None) for i in range(first, first + 10_000)
            ]
            await produce(producer, recs, part, 1 << 20, 64 << 10, lambda *_: None)
    finally:
        await producer.stop()


def test_kafka_source_to_file_roll_across_a_restart(agent_factory, kafka_broker, tmp_path):
    """kafka source -> memory -> file_roll, as a deployment would run it: every message
    lands in the rolled files once, across a restart in the middle of the run."""
    n = 20_000
    topic, group = _name("roll"), _name("g")
    asyncio.run(create_topics(kafka_broker.bootstrap, {topic: 3}))
    out = tmp_path / "rolled"
    out.mkdir()
    conf = (
        _source_conf(kafka_broker.bootstrap, topic, group, out / "unused").split(
            "[agents.a1.sinks.k1]"
        )[0]
        + f"""
[agents.a1.sinks.k1]
type = "file_roll"
channel = "c1"
"sink.directory" = "{out}"
"sink.rollInterval" = 1
"sink.batchSize" = 500
"sink.serializer" = "text"
"""
    )

    def rolled() -> Counter[int]:
        return Counter(int(x) for p in out.iterdir() for x in p.read_bytes().split())

    asyncio.run(_produce(kafka_broker.bootstrap, topic, 0, n // 2))
    agent = agent_factory(conf, env=ENV)
    wait_until_sync(lambda: sum(rolled().values()) > 0, 60, "the first events")
    assert agent.terminate() == 0
    before = sum(rolled().values())
    asyncio.run(_produce(kafka_broker.bootstrap, topic, n // 2, n))
    agent.start()
    wait_until_sync(lambda: len(rolled()) >= n, 60, "every message in the files")
    assert agent.terminate() == 0
    got = rolled()
    assert set(got) == set(range(n)), "a message was skipped"
    assert max(got.values()) == 1, "a message was delivered twice"
    assert before < n
    assert len(list(out.iterdir())) >= 2  # one file per run at least
