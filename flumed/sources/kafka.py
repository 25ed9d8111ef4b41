"""Source `kafka` (Flume's org.apache.flume.source.kafka.KafkaSource), on aiokafka.

Keys as Flume's: `kafka.bootstrap.servers`, `kafka.topics` (comma-separated) or
`kafka.topics.regex`, `kafka.consumer.group.id` (flume), `batchSize` (1000),
`batchDurationMillis` (1000), `useFlumeEventFormat`, `setTopicHeader`/`topicHeader`,
`header.<flume header> = <kafka header>`, `backoffSleepIncrement`/`maxBackoffSleep`,
and `kafka.consumer.*` in Kafka's spelling (see flumed.kafka.options).

Every event gets the headers `topic` (unless setTopicHeader = false), `partition`,
`offset`, `timestamp` (the record's) and `key` (when the record has one). Offsets are
committed only after the batch is committed to the channel(s). While the channel
refuses a batch, the source pauses its partitions and offers the same batch again;
after a rebalance the held batch is dropped instead, since its records are read again
from the committed offsets by whichever consumer owns them now.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from flumed.config.keys import ignored, key, prefix, renamed
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.kafka.counters import KafkaSourceCounter, elapsed_ms
from flumed.kafka.options import (
    ClientOptions,
    client_options,
    client_problems,
    split_servers,
)
from flumed.kafka.records import (
    CommitError,
    commit_offsets,
    decode_record,
    getmany,
    partitions_text,
)
from flumed.logs import RateLimitedLog
from flumed.sources.base import PollableSource, Status

log = logging.getLogger("flumed.sources.kafka")


@dataclass(frozen=True, slots=True)
class KafkaSourceConfig:
    bootstrap_servers: str = key(name="kafka.bootstrap.servers", doc="host:port,host:port")
    topics: list[str] | None = key(None, name="kafka.topics", doc="Comma-separated topics.")
    topics_regex: str | None = key(None, name="kafka.topics.regex")
    group_id: str = key("flume", name="kafka.consumer.group.id")
    batchSize: int = key(1000, ge=1, doc="Most events per channel transaction.")
    batchDurationMillis: int = key(1000, ge=1, doc="Most ms spent filling one batch.")
    backoffSleepIncrement: int = key(1000, ge=1, doc="ms added to the wait per empty poll.")
    maxBackoffSleep: int = key(5000, ge=1, doc="Longest wait after empty polls (ms).")
    useFlumeEventFormat: bool = key(False, doc="Records are AvroFlumeEvents (headers kept).")
    setTopicHeader: bool = key(True)
    topicHeader: str = key("topic")
    header: dict[str, Any] = prefix("header", doc="header.<flume header> = <kafka header>")
    consumer: dict[str, Any] = prefix("kafka.consumer", doc="Kafka consumer keys.")

    RENAMED = renamed({"topic": "kafka.topics", "groupId": "kafka.consumer.group.id"})
    IGNORED = {
        **ignored("migrateZookeeperOffsets"),
        "zookeeperConnect": "is deprecated; flumed does not look the brokers up in ZooKeeper "
        "(set 'kafka.bootstrap.servers')",
    }

    def topic_list(self) -> list[str]:
        return [t.strip() for item in self.topics or () for t in item.split(",") if t.strip()]

    def options(self) -> ClientOptions:
        return client_options(self.consumer, "consumer")

    def check(self) -> list[str]:
        problems = client_problems(self.bootstrap_servers, self.options())
        if self.topics_regex:
            try:
                re.compile(self.topics_regex)
            except re.error as e:
                problems.append(f"key 'kafka.topics.regex': not a valid regex: {e}")
            if self.topic_list():
                log.warning("kafka.topics.regex is set: kafka.topics is ignored (as in Flume).")
        elif not self.topic_list():
            problems.append("one of the keys 'kafka.topics', 'kafka.topics.regex' is required")
        if not self.group_id:
            problems.append("key 'kafka.consumer.group.id': must not be empty")
        return problems


class _Pending:
    """A batch read from Kafka and not yet accepted by the channel(s)."""

    __slots__ = ("events", "generation", "offsets", "origin", "records")

    def __init__(
        self,
        events: list[Event],
        origin: list[int] | None,
        records: list[Any],
        offsets: dict[TopicPartition, int],
        generation: int,
    ) -> None:
        self.events = events
        # events[i] was made from records[origin[i]]; None: from records[i] (no record
        # was unreadable).
        self.origin = origin
        self.records = records  # every record read, unreadable ones included
        self.offsets = offsets  # what to commit once all of them are in the channel
        self.generation = generation

    def cut(self, accepted: int) -> list[Any]:
        """Drop the first `accepted` events; returns the records they (and any unreadable
        records among them) came from."""
        if accepted >= len(self.events):
            end = len(self.records)
        else:
            end = self.origin[accepted] if self.origin is not None else accepted
        head, self.records = self.records[:end], self.records[end:]
        del self.events[:accepted]
        if self.origin is not None:
            self.origin = [i - end for i in self.origin[accepted:]]
        return head


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.source._generation += 1
        if revoked:
            log.info(
                "Source %s: partitions revoked: %s.", self.source.name, partitions_text(revoked)
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("Source %s: partitions assigned: %s.", self.source.name, partitions_text(assigned))


def _offsets(records: Sequence[Any]) -> dict[TopicPartition, int]:
    """The offsets to commit after `records`: the next one of each partition."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[TopicPartition(r.topic, r.partition)] = r.offset + 1
    return out


class KafkaSource(PollableSource):
    """Consumes Kafka topics into the channel(s); see the module docstring."""

    Config = KafkaSourceConfig
    config: KafkaSourceConfig
    counter: KafkaSourceCounter
    counter_class = KafkaSourceCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.backoff_increment_ms = config.backoffSleepIncrement
        self.max_backoff_ms = config.maxBackoffSleep
        self._options = config.options()
        self._kwargs: dict[str, Any] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: _Pending | None = None
        self._paused = False
        self._generation = 0
        self._warn = RateLimitedLog(log, interval=1.0)
        self._header_map = [(f, str(k)) for f, k in config.header.items()]
        timeout_ms = int(self._options.kwargs.get("request_timeout_ms", 40000))
        self._commit_timeout = timeout_ms / 1000 + 5

    async def start(self) -> None:
        """Reads the TLS files (a bad one fails the start); connects in the runner, so an
        unreachable broker does not keep the agent from starting."""
        self._kwargs = self._options.build()
        self._kwargs.update(
            bootstrap_servers=split_servers(self.config.bootstrap_servers),
            group_id=self.config.group_id,
            enable_auto_commit=False,
        )
        self._kwargs.setdefault("client_id", f"flumed-{self.name}")
        await super().start()

    async def stop(self) -> None:
        await super().stop()  # the batch in flight finishes: channel, then offsets
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.stop(), 10)
            except (KafkaError, OSError, TimeoutError) as e:
                log.warning("Source %s: Kafka consumer did not close cleanly: %s", self.name, e)
        if self._pending is not None:
            log.info(
                "Source %s: stopped holding %d events the channel did not accept; their "
                "offsets are not committed, so they are read again.",
                self.name,
                len(self._pending.events),
            )
            self._pending = None

    async def _connect(self) -> AIOKafkaConsumer | None:
        if self._consumer is not None:
            return self._consumer
        consumer = AIOKafkaConsumer(**self._kwargs)
        try:
            await consumer.start()
        except (KafkaError, OSError) as e:
            await consumer.stop()
            self._warn.log(
                logging.WARNING,
                "Source %s: cannot reach Kafka at %s: %s",
                self.name,
                self.config.bootstrap_servers,
                e,
            )
            return None
        listener = _Listener(self)
        if self.config.topics_regex:
            consumer.subscribe(pattern=self.config.topics_regex, listener=listener)
        else:
            consumer.subscribe(topics=self.config.topic_list(), listener=listener)
        log.info("Source %s connected to Kafka at %s.", self.name, self.config.bootstrap_servers)
        self._consumer = consumer
        return consumer

    async def process(self) -> Status:
        """Read one batch (or offer the held one again), commit it to the channel(s),
        then commit its offsets. BACKOFF when nothing came or the channel refused."""
        consumer = await self._connect()
        if consumer is None:
            return Status.BACKOFF
        counter = self.counter
        pending = self._pending
        if pending is not None and pending.generation != self._generation:
            log.info(
                "Source %s: dropping %d held events after a rebalance; they are read again "
                "from the committed offsets.",
                self.name,
                len(pending.events),
            )
            pending = self._pending = None
            self._paused = False
        if pending is None:
            generation = self._generation
            t0 = time.perf_counter()
            try:
                pieces = await self._poll(consumer)
            except KafkaError as e:
                self._warn.log(logging.WARNING, "Source %s: reading Kafka failed: %s", self.name, e)
                counter.GenericProcessingFail += 1
                return Status.BACKOFF
            if not pieces:
                counter.KafkaEmptyCount += 1
                return Status.BACKOFF
            counter.KafkaEventGetTimer += elapsed_ms(t0)
            pending = self._pending = self._to_pending(pieces, generation)
            counter.EventReceivedCount += len(pending.events)
            counter.AppendBatchReceivedCount += 1
        if pending.events:
            try:
                await self.processor.process_batch(pending.events)
            except ChannelError as e:
                await self._refused(consumer, pending, e)
                return Status.BACKOFF
            counter.EventAcceptedCount += len(pending.events)
            counter.AppendBatchAcceptedCount += 1
        self._pending = None
        if self._paused:
            self._paused = False
            consumer.resume(*consumer.paused())
        await self._commit(consumer, pending.offsets)
        return Status.READY

    async def _refused(
        self, consumer: AIOKafkaConsumer, pending: _Pending, e: ChannelError
    ) -> None:
        """The channel refused (part of) the batch: keep the rest, stop fetching."""
        self.counter.ChannelWriteFail += 1
        accepted = e.accepted if isinstance(e, ChannelFullError) else 0
        if accepted:
            # The accepted head is in the channel: commit it, offer only the rest again.
            self.counter.EventAcceptedCount += accepted
            await self._commit(consumer, _offsets(pending.cut(accepted)))
        if not self._paused:
            self._paused = True
            consumer.pause(*consumer.assignment())
        self._warn.log(
            logging.WARNING,
            "Source %s: channel refused %d events; consumption paused until they fit: %s",
            self.name,
            len(pending.events),
            e,
        )

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit offsets of partitions still assigned. A failure only costs duplicates
        (the records are read again), so it is logged and counted, not raised."""
        try:
            self.counter.KafkaCommitTimer += await commit_offsets(
                consumer, offsets, self._commit_timeout
            )
        except CommitError as e:
            self.counter.GenericProcessingFail += 1
            self._warn.warn(
                "Source %s: committing offsets failed (%s); those records may be read again.",
                self.name,
                e,
            )

    async def _poll(self, consumer: AIOKafkaConsumer) -> list[tuple[TopicPartition, list[Any]]]:
        """Up to batchSize records, waiting at most batchDurationMillis in all; as
        (partition, records) pieces in the order they came."""
        loop = asyncio.get_running_loop()
        want = self.config.batchSize
        deadline = loop.time() + self.config.batchDurationMillis / 1000
        out: list[tuple[TopicPartition, list[Any]]] = []
        n = 0
        while True:
            remaining = deadline - loop.time()
            got = await getmany(consumer, max(0.0, remaining), want - n)
            for tp, recs in got.items():
                out.append((tp, recs))
                n += len(recs)
            if not got or n >= want or remaining <= 0:
                return out

    def _to_pending(
        self, pieces: list[tuple[TopicPartition, list[Any]]], generation: int
    ) -> _Pending:
        """Events with Flume's headers. Unreadable records (not an AvroFlumeEvent with
        useFlumeEventFormat) are counted, logged and skipped; their offsets are committed
        with the batch."""
        cfg = self.config
        topic_header = cfg.topicHeader if cfg.setTopicHeader else None
        events: list[Event] = []
        records: list[Any] = []
        offsets: dict[TopicPartition, int] = {}
        origin: list[int] | None = None
        for tp, recs in pieces:
            offsets[tp] = recs[-1].offset + 1
            if cfg.useFlumeEventFormat or self._header_map or topic_header is None:
                origin = self._general(recs, events, len(records), origin, topic_header)
            else:
                # The common case, kept tight: one dict display per record.
                topic, part = tp.topic, str(tp.partition)
                for r in recs:
                    h = {
                        "timestamp": str(r.timestamp),
                        topic_header: topic,
                        "partition": part,
                        "offset": str(r.offset),
                    }
                    if r.key is not None:
                        h["key"] = r.key.decode("utf-8", "replace")
                    events.append(Event(r.value if r.value is not None else b"", h))
                if origin is not None:
                    origin.extend(range(len(records), len(records) + len(recs)))
            records.extend(recs)
        return _Pending(events, origin, records, offsets, generation)

    def _unreadable(self, record: Any, why: str) -> None:
        self.counter.EventReadFail += 1
        self._warn.warn("Source %s: %s (is useFlumeEventFormat right?)", self.name, why)

    def _general(
        self,
        recs: list[Any],
        events: list[Event],
        base: int,
        origin: list[int] | None,
        topic_header: str | None,
    ) -> list[int] | None:
        """Events of `recs` with every option: Flume's Avro format (headers carried in
        the record win), header mapping, no topic header. Returns `origin`, created at
        the first unreadable record."""
        avro = self.config.useFlumeEventFormat
        header_map = self._header_map
        for i, r in enumerate(recs, base):
            ev = decode_record(r, avro, self._unreadable)
            if ev is None:
                if origin is None:
                    origin = list(range(len(events)))
                continue
            h = ev.headers
            if "timestamp" not in h:
                h["timestamp"] = str(r.timestamp)
            if header_map and r.headers:
                for fname, kname in header_map:
                    for hk, hv in r.headers:
                        if hk == kname and hv is not None:
                            h[fname] = hv.decode("utf-8", "replace")
            if topic_header is not None and topic_header not in h:
                h[topic_header] = r.topic
            if "partition" not in h:
                h["partition"] = str(r.partition)
            if "offset" not in h:
                h["offset"] = str(r.offset)
            if r.key is not None:
                h["key"] = r.key.decode("utf-8", "replace")
            events.append(ev)
            if origin is not None:
                origin.append(i)
        return origin
