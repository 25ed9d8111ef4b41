"""Kafka sink against a real broker: routing and keys, and a broker that goes away.

The agents are real `flumed agent` processes; what reached Kafka is read back with a
separate aiokafka consumer.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from pathlib import Path

from aiokafka.partitioner import murmur2

from tests.integration.kafka_broker import TansuBroker, TcpProxy, consume, create_topics
from tests.util import free_port, wait_until_sync

REPO = Path(__file__).resolve().parents[3]
ENV = {"PYTHONPATH": str(REPO)}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _send_lines(port: int, start: int, stop: int) -> None:
    """Numbered lines to a netcat source (ack-every-event off), then close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"".join(b"%d\n" % i for i in range(start, stop)))
        s.shutdown(socket.SHUT_WR)
        # The source closes the connection once it committed everything it read.
        s.settimeout(120)
        while s.recv(4096):
            pass


def _netcat_kafka_conf(port: int, bootstrap: str, topic: str, extra: str = "") -> str:
    return f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = false
max-line-length = 64
channels = ["c1"]

[agents.a1.channels.c1]
type = "memory"
capacity = 200000
transactionCapacity = 5000

[agents.a1.sinks.k1]
type = "org.apache.flume.sink.kafka.KafkaSink"
channel = "c1"
"kafka.bootstrap.servers" = "{bootstrap}"
"kafka.topic" = "{topic}"
flumeBatchSize = 1000
{extra}
"""


def _values(records: list) -> Counter[int]:
    return Counter(int(r.value) for r in records)


def test_netcat_to_kafka_routes_by_topic_header_with_keys(agent_factory, kafka_broker):
    """100,000 events: the `topic` header splits them over two topics, the `key` header
    becomes the record key, and keyed records land on Kafka's murmur2 partition."""
    n = 100_000
    even, odd, default = _name("even"), _name("odd"), _name("default")
    asyncio.run(create_topics(kafka_broker.bootstrap, {even: 3, odd: 2, default: 1}))
    port = free_port()
    conf = _netcat_kafka_conf(port, kafka_broker.bootstrap, default)
    route = f"""
[agents.a1.sources.r1.interceptors.i1]
type = "tests.integration.kafka.support:RouteInterceptor"
topics = ["{even}", "{odd}"]
"""
    conf = conf.replace('channels = ["c1"]\n', 'channels = ["c1"]\n' + route, 1)
    agent = agent_factory(conf, env=ENV)
    _send_lines(port, 0, n)
    records = asyncio.run(
        consume(kafka_broker.bootstrap, [even, odd, default], lambda r: len(r) >= n)
    )
    values = _values(records)
    assert set(values) == set(range(n))
    assert max(values.values()) == 1  # no broker trouble here: no duplicates
    for r in records:
        i = int(r.value)
        assert r.topic == (even if i % 2 == 0 else odd)
        assert r.key == b"k%d" % (i % 7)
        nparts = 3 if r.topic == even else 2
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % nparts
    assert agent.counter("SINK.k1", "EventDrainSuccessCount") == n
    assert agent.counter("SINK.k1", "EventWriteFail") == 0


def _outage_run(agent_factory, broker_bootstrap: str, cut_off, restore) -> None:
    """Half the events before the outage, half during it; all must arrive after."""
    n = 40_000
    topic = _name("outage")
    asyncio.run(create_topics(broker_bootstrap, {topic: 2}))
    port = free_port()
    extra = """
[agents.a1.sinks.k1.kafka.producer]
"request.timeout.ms" = 2000
"retry.backoff.ms" = 50
"""
    agent = agent_factory(_netcat_kafka_conf(port, broker_bootstrap, topic, extra), env=ENV)
    _send_lines(port, 0, n // 2)
    wait_until_sync(
        lambda: agent.counter("SINK.k1", "EventDrainSuccessCount") >= n // 2,
        60,
        "the first half delivered",
    )
    cut_off()
    try:
        _send_lines(port, n // 2, n)
        # The sink fails, rolls back and backs off, more than once while the broker is away.
        wait_until_sync(
            lambda: agent.counter("SINK.k1", "RollbackCount") >= 2,
            60,
            "the sink to fail twice",
        )
        assert agent.counter("SINK.k1", "EventDrainSuccessCount") < n
        assert agent.counter("CHANNEL.c1", "ChannelSize") > 0
    finally:
        restore()
    records = asyncio.run(
        consume(broker_bootstrap, [topic], lambda r: set(_values(r)) >= set(range(n)))
    )
    values = _values(records)
    assert set(values) == set(range(n))
    # Only batches in flight when the broker went away can arrive twice.
    assert sum(values.values()) - n <= 10_000
    wait_until_sync(lambda: agent.counter("CHANNEL.c1", "ChannelSize") == 0, 60, "drained")


def test_broker_frozen_with_sigstop(agent_factory, tansu):
    broker: TansuBroker = tansu()
    _outage_run(agent_factory, broker.bootstrap, broker.freeze, broker.thaw)


def test_broker_cut_off_by_proxy(agent_factory, tansu):
    proxy_port = free_port()
    broker: TansuBroker = tansu(advertised_port=proxy_port)
    proxy = TcpProxy(broker.port, port=proxy_port).start()
    try:
        _outage_run(agent_factory, broker.bootstrap, proxy.cut, proxy.restore)
    finally:
        proxy.stop()
