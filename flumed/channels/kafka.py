"""Channel `kafka` (Flume's org.apache.flume.channel.kafka.KafkaChannel), on aiokafka.

The events live in a Kafka topic, so the channel is durable and can be shared: several
agents using one topic and one consumer group split the events between them.

- A put transaction is one produced batch: on commit every event is sent and the
  commit returns once Kafka acknowledged all of them (acks=all by default); otherwise it
  raises ChannelError and nothing counts as put (events acknowledged before the failure
  are in the topic and are read again: at-least-once).
- A take transaction reads from the group's consumer. Its commit commits the consumer
  offsets; its rollback rewinds the consumer to the first record it took, so the same
  records are read again. Takers of one channel take turns (one consumer per channel).

Keys as Flume's: `kafka.bootstrap.servers`, `kafka.topic` (flume-channel),
`kafka.consumer.group.id` (flume), `parseAsFlumeEvent` (true), `kafka.pollTimeout`
(500 ms; `pollTimeout` also accepted), `defaultPartitionId`, `partitionIdHeader`,
`kafka.producer.*`, `kafka.consumer.*` (auto.offset.reset defaults to earliest, as
in Flume's channel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import KafkaError

from flumed.channels.base import Channel, Transaction
from flumed.config.keys import ignored, key, prefix, renamed
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.kafka.codec import encode_flume_event
from flumed.kafka.counters import KafkaChannelCounter, elapsed_ms
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
from flumed.kafka.records import (
    CommitError,
    commit_offsets,
    decode_record,
    getmany,
    partitions_text,
)
from flumed.logs import RateLimitedLog

log = logging.getLogger("flumed.channels.kafka")

#: A Kafka channel has no transaction limit of its own; a source's whole batch is one put.
NO_LIMIT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class KafkaChannelConfig:
    bootstrap_servers: str = key(name="kafka.bootstrap.servers", doc="host:port,host:port")
    topic: str = key("flume-channel", name="kafka.topic")
    group_id: str = key("flume", name="kafka.consumer.group.id")
    parseAsFlumeEvent: bool = key(True, doc="Records are AvroFlumeEvents (headers kept).")
    pollTimeout: int = key(
        500, name="kafka.pollTimeout", aliases=("pollTimeout",), ge=0, doc="ms a take waits."
    )
    defaultPartitionId: int | None = key(None, ge=0)
    partitionIdHeader: str | None = key(None)
    producer: dict[str, Any] = prefix("kafka.producer", doc="Kafka producer keys.")
    consumer: dict[str, Any] = prefix("kafka.consumer", doc="Kafka consumer keys.")

    RENAMED = renamed(
        {
            "brokerList": "kafka.bootstrap.servers",
            "topic": "kafka.topic",
            "groupId": "kafka.consumer.group.id",
        }
    )
    IGNORED = {
        **ignored("migrateZookeeperOffsets", "readSmallestOffset"),
        "zookeeperConnect": "is deprecated; flumed does not look the brokers up in ZooKeeper "
        "(set 'kafka.bootstrap.servers')",
    }

    def options(self) -> tuple[ClientOptions, ClientOptions]:
        return (
            client_options(self.producer, "producer"),
            client_options(self.consumer, "consumer"),
        )

    def check(self) -> list[str]:
        problems = client_problems(self.bootstrap_servers, *self.options())
        if not LEGAL_TOPIC.match(self.topic):
            problems.append(f"key 'kafka.topic': {self.topic!r} is not a legal Kafka topic name")
        if not self.group_id:
            problems.append("key 'kafka.consumer.group.id': must not be empty")
        return problems


class KafkaTransaction(Transaction):
    """A put (staged events, produced on commit) or a take (records read, offsets
    committed on commit, consumer rewound on rollback)."""

    __slots__ = ("_events", "_first", "_locked", "_next")

    channel: KafkaChannel

    def __init__(self, channel: KafkaChannel) -> None:
        super().__init__(channel)
        self._events: list[Event] = []
        self._locked = False
        self._first: dict[TopicPartition, int] = {}  # first offset taken: a rollback seeks here
        self._next: dict[TopicPartition, int] = {}  # after the last one taken: commit this

    async def _do_put(self, events: Sequence[Event]) -> None:
        self._events.extend(events)
        self.channel.counter.EventPutAttemptCount += len(events)

    async def _do_take(self, max_events: int, timeout: float) -> list[Event]:
        ch = self.channel
        if not self._locked:
            # Takers take turns: a rollback rewinds the one consumer, which must not move
            # under another taker's feet.
            if timeout <= 0 and ch._take_lock.locked():
                return []
            try:
                async with asyncio.timeout(max(timeout, 0)):
                    await ch._take_lock.acquire()
            except TimeoutError:
                return []
            self._locked = True
        consumer = await ch._consumer_ready()
        wait = min(timeout, ch.config.pollTimeout / 1000)
        t0 = time.perf_counter()
        try:
            got = await getmany(consumer, wait, max_events)
        except KafkaError as e:
            raise ChannelError(f"Channel {ch.name}: reading Kafka failed: {e}") from e
        ch.counter.EventTakeAttemptCount += 1
        if not got:
            return []
        ch.counter.KafkaEventGetTimer += elapsed_ms(t0)
        events: list[Event] = []
        for tp, recs in got.items():
            self._first.setdefault(tp, recs[0].offset)
            self._next[tp] = ch._position[tp] = recs[-1].offset + 1
            ch._decode(recs, events)
        ch._no_held_take.clear()
        self._events.extend(events)
        return events

    async def _do_commit(self) -> None:
        ch = self.channel
        try:
            if self._kind == "put":
                await ch._send(self._events)
            elif self._kind == "take":
                await ch._commit_offsets(self._next)
                ch.counter.EventTakeSuccessCount += len(self._events)
        finally:
            self._events = []
            self._release()

    async def _do_rollback(self) -> None:
        ch = self.channel
        if self._kind == "take" and ch._consumer is not None:
            assigned = ch._consumer.assignment()
            for tp, offset in self._first.items():
                if tp in assigned:
                    ch._consumer.seek(tp, offset)
                    ch._position[tp] = offset
            ch.counter.RollbackCount += len(self._events)
        self._events = []
        self._release()

    def _release(self) -> None:
        if self._locked:
            self._locked = False
            self.channel._no_held_take.set()
            self.channel._take_lock.release()


class _Listener(ConsumerRebalanceListener):
    def __init__(self, channel: KafkaChannel) -> None:
        self.channel = channel

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let a take holding records commit its offsets or rewind before its partitions
        # move to another member: fewer records are read twice. (Not the take lock: a
        # take waiting in getmany() waits for this rebalance to end.)
        await self.channel._no_held_take.wait()
        for tp in revoked:
            self.channel._position.pop(tp, None)
        if revoked:
            log.info(
                "Channel %s: partitions revoked: %s.", self.channel.name, partitions_text(revoked)
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "Channel %s: partitions assigned: %s.", self.channel.name, partitions_text(assigned)
        )


class KafkaChannel(Channel):
    """A Kafka topic as the channel; see the module docstring.

    Connects on first use, so that an unreachable broker fails puts and takes with
    ChannelError (sources push back, sinks back off) instead of the agent's start.
    """

    Config = KafkaChannelConfig
    config: KafkaChannelConfig
    counter: KafkaChannelCounter
    counter_class = KafkaChannelCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._popts, self._copts = config.options()
        self._pkwargs: dict[str, Any] = {}
        self._ckwargs: dict[str, Any] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._connect_lock = asyncio.Lock()
        self._take_lock = asyncio.Lock()
        self._no_held_take = asyncio.Event()  # set while no take transaction holds records
        self._no_held_take.set()
        self._position: dict[TopicPartition, int] = {}
        self._publisher = Publisher(self._popts)
        self._warn = RateLimitedLog(log, interval=1.0)
        self._commit_timeout = int(self._copts.kwargs.get("request_timeout_ms", 40000)) / 1000 + 5

    # -- Channel API -----------------------------------------------------------------------
    def transaction(self) -> KafkaTransaction:
        return KafkaTransaction(self)

    @property
    def size(self) -> int:
        """Records in this consumer's partitions not yet taken (from the last fetch's
        high watermarks; other members' partitions are not counted)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        n = 0
        for tp, pos in self._position.items():
            hw = consumer.highwater(tp)
            if hw is not None and hw > pos:
                n += hw - pos
        return n

    @property
    def capacity(self) -> int:
        return 0  # bounded by the topic's retention, not by a count

    @property
    def transaction_capacity(self) -> int:
        return NO_LIMIT

    async def start(self) -> None:
        """Reads the TLS files (a bad one fails the start); connects on first use."""
        servers = split_servers(self.config.bootstrap_servers)
        self._pkwargs = producer_kwargs(self._popts, servers, f"flumed-{self.name}-producer")
        self._ckwargs = {"auto_offset_reset": "earliest", **self._copts.build()}
        self._ckwargs.update(
            bootstrap_servers=servers, group_id=self.config.group_id, enable_auto_commit=False
        )
        self._ckwargs.setdefault("client_id", f"flumed-{self.name}-consumer")
        await super().start()

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        for client in (consumer, producer):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.stop(), 10)
            except (KafkaError, OSError, TimeoutError) as e:
                log.warning("Channel %s: Kafka client did not close cleanly: %s", self.name, e)
        self._position.clear()
        await super().stop()

    # -- connections -----------------------------------------------------------------------
    async def _producer_ready(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._connect_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._pkwargs)
                await self._start_client(producer)
                self._producer = producer
        return self._producer

    async def _consumer_ready(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        async with self._connect_lock:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(**self._ckwargs)
                await self._start_client(consumer)
                consumer.subscribe(topics=[self.config.topic], listener=_Listener(self))
                self._consumer = consumer
        return self._consumer

    async def _start_client(self, client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
        try:
            await client.start()
        except (KafkaError, OSError) as e:
            await client.stop()
            raise ChannelError(
                f"Channel {self.name}: cannot reach Kafka at {self.config.bootstrap_servers}: {e}"
            ) from e
        log.info(
            "Channel %s: %s connected to Kafka at %s.",
            self.name,
            type(client).__name__,
            self.config.bootstrap_servers,
        )

    # -- puts ------------------------------------------------------------------------------
    async def _send(self, events: list[Event]) -> None:
        """Produce a put transaction's events; return once Kafka acknowledged all.

        Raises:
            ChannelError: Kafka is unreachable or did not acknowledge in time.
        """
        if not events:
            return
        producer = await self._producer_ready()
        try:
            ms = await self._publisher.publish(producer, self._records(events), self._bad_record)
        except PublishError as e:
            raise ChannelError(
                f"Channel {self.name}: Kafka did not acknowledge {len(events)} events "
                f"({e}); the put is rolled back"
            ) from e
        self.counter.KafkaEventSendTimer += ms
        self.counter.EventPutSuccessCount += len(events)

    def _bad_record(self, what: str, dropped: bool) -> None:
        self.counter.EventPutErrorCount += 1
        level = logging.ERROR if dropped else logging.WARNING
        self._warn.log(level, "Channel %s: %s.", self.name, what)

    def _records(self, events: list[Event]) -> Iterator[Record]:
        cfg = self.config
        topic = cfg.topic
        avro = cfg.parseAsFlumeEvent
        static_pid = cfg.defaultPartitionId
        pid_header = cfg.partitionIdHeader
        for e in events:
            h = e.headers
            partition = static_pid
            if pid_header is not None:
                partition = header_partition(h, pid_header, static_pid, self._bad_record)
            k = h.get("key")
            value = encode_flume_event(e) if avro else e.body
            yield (topic, partition, None if k is None else k.encode(), value, None, None)

    # -- takes -----------------------------------------------------------------------------
    def _decode(self, records: list[Any], out: list[Event]) -> None:
        """Append the events of `records` to `out`. Unreadable records are counted,
        logged and skipped (their offsets are committed with the take)."""
        avro = self.config.parseAsFlumeEvent
        for r in records:
            ev = decode_record(r, avro, self._unreadable)
            if ev is None:
                continue
            if r.key is not None:
                ev.headers["key"] = r.key.decode("utf-8", "replace")
            out.append(ev)

    def _unreadable(self, record: Any, why: str) -> None:
        self.counter.EventTakeErrorCount += 1
        self._warn.warn("Channel %s: %s (is parseAsFlumeEvent right?)", self.name, why)

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit a take's offsets. A failure only means its records may be read again
        (by this member or the next owner of the partition): logged, not raised, as in
        Flume."""
        consumer = self._consumer
        if consumer is None or not offsets:
            return
        try:
            self.counter.KafkaCommitTimer += await commit_offsets(
                consumer, offsets, self._commit_timeout
            )
        except CommitError as e:
            self._warn.warn(
                "Channel %s: committing offsets failed (%s); those events may be taken again.",
                self.name,
                e,
            )
