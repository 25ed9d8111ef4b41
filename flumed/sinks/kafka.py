"""Sink `kafka` (Flume's org.apache.flume.sink.kafka.KafkaSink), on aiokafka.

Keys as Flume's: `kafka.bootstrap.servers`, `kafka.topic`, `flumeBatchSize`,
`useFlumeEventFormat`, `defaultPartitionId`, `partitionIdHeader`, `allowTopicOverride`,
`topicHeader`, `timestampHeader`, `header.<flume header> = <kafka header>`, and
`kafka.producer.*` in Kafka's spelling (see flumed.kafka.options).

One `process()` call takes a batch, sends it in one Kafka batch per partition, and
commits the take only once Kafka acknowledged every record (acks=all by default). A
broker that is down or slow fails the call: the take rolls back and the runner backs
off, so nothing is lost; records acknowledged before the failure are sent again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from flumed.config.keys import key, prefix, renamed
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.kafka.codec import encode_flume_event
from flumed.kafka.counters import KafkaSinkCounter
from flumed.kafka.options import (
    ClientOptions,
    client_options,
    client_problems,
    split_servers,
)
from flumed.kafka.produce import (
    LEGAL_TOPIC,
    Publisher,
    PublishError,
    Record,
    header_partition,
    producer_kwargs,
)
from flumed.logs import RateLimitedLog
from flumed.sinks.base import BatchSink

log = logging.getLogger("flumed.sinks.kafka")

_ESCAPE = re.compile(r"%\{([^}]*)\}")


def _escape(template: str, headers: dict[str, str]) -> str:
    """Flume's `%{header}` escapes (BucketPath's header form; no time escapes). The
    topic's only caller of escaping: to be replaced by the shared escapes module
    (flumed/escapes.py, the HDFS sink's BucketPath) once it is on main."""
    return _ESCAPE.sub(lambda m: headers.get(m.group(1), ""), template)


@dataclass(frozen=True, slots=True)
class KafkaSinkConfig:
    bootstrap_servers: str = key(name="kafka.bootstrap.servers", doc="host:port,host:port")
    topic: str = key("default-flume-topic", name="kafka.topic", doc="May hold %{header} escapes.")
    flumeBatchSize: int = key(100, ge=1, doc="Events taken and sent per transaction.")
    useFlumeEventFormat: bool = key(False, doc="Wrap headers and body in an AvroFlumeEvent.")
    defaultPartitionId: int | None = key(None, ge=0)
    partitionIdHeader: str | None = key(None)
    allowTopicOverride: bool = key(True)
    topicHeader: str = key("topic")
    timestampHeader: str | None = key(None, doc="Header holding the record's timestamp (ms).")
    header: dict[str, Any] = prefix("header", doc="header.<flume header> = <kafka header>")
    producer: dict[str, Any] = prefix("kafka.producer", doc="Kafka producer keys.")

    RENAMED = renamed(
        {
            "brokerList": "kafka.bootstrap.servers",
            "topic": "kafka.topic",
            "batchSize": "flumeBatchSize",
            "requiredAcks": "kafka.producer.acks",
        }
    )
    IGNORED = {
        "kafka.flumeBatchSize": "is not a Kafka or Flume setting (Flume ignores it too); "
        "the number of events per transaction is 'flumeBatchSize'",
    }

    def options(self) -> ClientOptions:
        return client_options(self.producer, "producer")

    def check(self) -> list[str]:
        problems = client_problems(self.bootstrap_servers, self.options())
        if "%{" not in self.topic and not LEGAL_TOPIC.match(self.topic):
            problems.append(
                f"key 'kafka.topic': {self.topic!r} is not a legal Kafka topic name "
                "(letters, digits, '.', '_', '-'; at most 249)"
            )
        return problems


class KafkaSink(BatchSink):
    """Publishes events to Kafka; see the module docstring."""

    Config = KafkaSinkConfig
    config: KafkaSinkConfig
    counter: KafkaSinkCounter
    counter_class = KafkaSinkCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._options = config.options()
        self._kwargs: dict[str, Any] = {}
        self._producer: AIOKafkaProducer | None = None
        self._publisher = Publisher(self._options)
        self._warn = RateLimitedLog(log, interval=1.0)
        self._header_map = [(f, str(k)) for f, k in config.header.items()]
        self._fallback_topic = config.topic if "%{" not in config.topic else None

    async def start(self) -> None:
        """Reads the TLS files (a bad one fails the start); connects on first use, so an
        unreachable broker does not keep the agent from starting."""
        servers = split_servers(self.config.bootstrap_servers)
        self._kwargs = producer_kwargs(self._options, servers, f"flumed-{self.name}")
        await super().start()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except (KafkaError, OSError, TimeoutError) as e:
                log.warning("Sink %s: Kafka producer did not close cleanly: %s", self.name, e)
        await super().stop()

    @property
    def batch_size(self) -> int:
        return self.config.flumeBatchSize

    async def prepare(self) -> None:
        """Connect before the take (an unreachable broker costs the channel nothing).

        Raises:
            DeliveryError: Kafka cannot be reached (counted in ConnectionFailedCount).
        """
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._kwargs)
        try:
            await producer.start()
        except (KafkaError, OSError) as e:
            self.counter.ConnectionFailedCount += 1
            await producer.stop()
            raise DeliveryError(
                f"Sink {self.name}: cannot reach Kafka at {self.config.bootstrap_servers}: {e}"
            ) from e
        self.counter.ConnectionCreatedCount += 1
        log.info("Sink %s connected to Kafka at %s.", self.name, self.config.bootstrap_servers)
        self._producer = producer

    async def deliver(self, events: list[Event]) -> None:
        """Send the batch and wait for every ack (acks=all by default).

        Raises:
            DeliveryError: Kafka did not acknowledge the batch in time (the take is
                rolled back).
        """
        producer = self._producer
        assert producer is not None, "prepare() first"
        counter = self.counter
        try:
            ms = await self._publisher.publish(producer, self._records(events), self._bad_record)
        except PublishError as e:
            counter.EventWriteFail += 1
            counter.RollbackCount += 1
            raise DeliveryError(
                f"Sink {self.name}: Kafka did not acknowledge a batch of {len(events)} "
                f"events ({e}); it stays in the channel"
            ) from e
        counter.KafkaEventSendTimer += ms

    def _bad_record(self, what: str, dropped: bool = False) -> None:
        # Counted always, logged at most once a second; ERROR when an event is lost.
        self.counter.EventWriteFail += 1
        self._warn.log(
            logging.ERROR if dropped else logging.WARNING, "Sink %s: %s.", self.name, what
        )

    def _records(self, events: list[Event]) -> Iterator[Record]:
        """The Kafka record of each event, as Flume's KafkaSink builds it."""
        cfg = self.config
        default_topic = cfg.topic
        escaped = "%{" in default_topic
        topic_header = cfg.topicHeader if cfg.allowTopicOverride else None
        pid_header = cfg.partitionIdHeader
        static_pid = cfg.defaultPartitionId
        ts_header = cfg.timestampHeader
        header_map = self._header_map
        avro = cfg.useFlumeEventFormat
        for e in events:
            h = e.headers
            topic = h.get(topic_header) if topic_header is not None else None
            if topic is None:
                topic = _escape(default_topic, h) if escaped else default_topic
            if topic is not default_topic and not LEGAL_TOPIC.match(topic):
                if self._fallback_topic is None:
                    self._bad_record(
                        f"topic name {topic!r} is not legal; the event was dropped", True
                    )
                    continue
                self._bad_record(
                    f"topic name {topic!r} is not legal; sent to {self._fallback_topic} instead"
                )
                topic = self._fallback_topic
            partition = static_pid
            if pid_header is not None:
                partition = header_partition(h, pid_header, static_pid, self._bad_record)
            ts = None
            if ts_header is not None:
                v = h.get(ts_header)
                if v is not None:
                    try:
                        ts = int(v)
                    except ValueError:
                        self._bad_record(f"header {ts_header}={v!r} is not a timestamp; ignored")
            k = h.get("key")
            kheaders = None
            if header_map:
                kheaders = [(kn, h[fn].encode()) for fn, kn in header_map if fn in h] or None
            yield (
                topic,
                partition,
                None if k is None else k.encode(),
                encode_flume_event(e) if avro else e.body,
                kheaders,
                ts,
            )
