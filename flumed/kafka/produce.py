"""Producing to Kafka: `produce()` sends whole batches per partition through aiokafka's
batch API and returns only once every record is acknowledged; `Publisher` holds one
component's settings for it (partitioner, size limits, deadline) and is what the Kafka
sink and the Kafka channel call.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from flumed.errors import FlumedError
from flumed.kafka.logs import describe
from flumed.kafka.options import ClientOptions

#: Kafka's legal topic names (kafka.common.internals.Topic).
LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

#: flumed's default for `batch.size`: the sink and the channel build whole batches, so a
#: larger one means fewer produce requests (Kafka's 16 KiB default caps a batch of
#: 100-byte events at about 140 records).
DEFAULT_BATCH_BYTES = 512 * 1024

#: (topic, partition or None, key, value, headers or None, timestamp ms or None)
Record = tuple[str, int | None, bytes | None, bytes, list[tuple[str, bytes]] | None, int | None]


class Partitioner:
    """Chooses partitions as Kafka's Java producer does.

    A record with a partition keeps it; a keyed record goes to murmur2(key) % count;
    records with neither stick to one partition until a batch's worth (batch.size) went
    there, then move to the next (Kafka's sticky partitioner, KIP-480).
    """

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def sticky(self, topic: str, partitions: list[int]) -> int:
        i = self._next.get(topic, -1) + 1
        self._next[topic] = i
        return partitions[i % len(partitions)]

    @staticmethod
    def keyed(key: bytes, partitions: list[int]) -> int:
        return partitions[(int(murmur2(key)) & 0x7FFFFFFF) % len(partitions)]


#: Per-record overhead in a v2 record batch, roughly (length, attributes, deltas, counts).
_RECORD_OVERHEAD = 16


async def produce(
    producer: AIOKafkaProducer,
    records: Iterable[Record],
    partitioner: Partitioner,
    max_request_size: int,
    batch_size: int,
    on_bad: Callable[[str, bool], None],
) -> int:
    """Send `records` in one batch per partition and wait until Kafka acknowledged all.

    Records larger than `max_request_size` are left out and reported to
    `on_bad(what, dropped=True)`; a partition number the topic does not have is reported
    with dropped=False and the record is partitioned as if it had none. Returns how many
    records were acknowledged.

    Raises:
        aiokafka.errors.KafkaError, OSError, TimeoutError: some record was not
            acknowledged; the caller rolls back and tries again (the ones that were
            acknowledged are then sent twice).
    """
    # topic -> partition -> records; the loop keeps the current topic's state in locals,
    # since a batch mostly goes to one topic.
    groups: dict[str, dict[int, list[Record]]] = {}
    parts: dict[str, list[int]] = {}
    sticky: dict[str, list[int]] = {}  # topic -> [partition, bytes sent there]
    cur_topic: str | None = None
    plist: list[int] = []
    tgroups: dict[int, list[Record]] = {}
    st: list[int] = [0, 0]
    for rec in records:
        topic, partition, key, value, _, _ = rec
        size = len(value) if key is None else len(value) + len(key)
        if size > max_request_size:
            on_bad(
                f"a {size}-byte record for topic {topic} exceeds max.request.size "
                f"{max_request_size}; it was dropped",
                True,
            )
            continue
        if topic != cur_topic:
            if topic not in parts:
                known = sorted(await producer.partitions_for(topic))
                if not known:
                    raise ConnectionError(f"no partition of topic {topic} is known")
                parts[topic] = known
                groups[topic] = {}
                sticky[topic] = [partitioner.sticky(topic, known), 0]
            cur_topic, plist, tgroups, st = topic, parts[topic], groups[topic], sticky[topic]
        if partition is not None and partition not in plist:
            on_bad(f"topic {topic} has no partition {partition}; partitioned by key instead", False)
            partition = None
        if partition is None:
            if key is not None:
                partition = Partitioner.keyed(key, plist)
            else:
                if st[1] >= batch_size:
                    st[0], st[1] = partitioner.sticky(topic, plist), 0
                st[1] += size + _RECORD_OVERHEAD
                partition = st[0]
        g = tgroups.get(partition)
        if g is None:
            tgroups[partition] = [rec]
        else:
            g.append(rec)
    futures: list[asyncio.Future[Any]] = []
    sent = 0
    pieces = [(t, p, recs) for t, tg in groups.items() for p, recs in tg.items()]
    for topic, partition, recs in pieces:
        builder = producer.create_batch()
        n = 0
        for _, _, key, value, headers, ts in recs:
            if builder.append(key=key, value=value, timestamp=ts, headers=headers or []) is None:
                futures.append(await producer.send_batch(builder, topic, partition=partition))
                builder = producer.create_batch()
                n = 0
                # A new batch takes at least one record, whatever its size.
                builder.append(key=key, value=value, timestamp=ts, headers=headers or [])
            n += 1
        if n:
            futures.append(await producer.send_batch(builder, topic, partition=partition))
        sent += len(recs)
    if futures:
        await asyncio.wait(futures)
        # Every future's exception is looked at, so none is reported as never retrieved.
        done = [f for f in futures if not f.cancelled()]
        errors = [e for e in (f.exception() for f in done) if e is not None]
        if errors:
            raise errors[0]
        if len(done) < len(futures):
            raise ConnectionError("the producer was closed before Kafka acknowledged")
    return sent


class PublishError(FlumedError):
    """Kafka did not acknowledge every record of a batch (its message says why, once)."""

    retriable = True


class Publisher:
    """One producing component's settings for `produce()`: its partitioner, Kafka's size
    limits from its `kafka.producer.*` options, and a deadline against a hang (aiokafka
    fails a batch itself after request.timeout.ms)."""

    def __init__(self, options: ClientOptions) -> None:
        kwargs = options.kwargs
        self.partitioner = Partitioner()
        self.max_request = int(kwargs.get("max_request_size", 1048576))
        self.batch_size = int(kwargs.get("max_batch_size", DEFAULT_BATCH_BYTES))
        self.deadline = 2 * int(kwargs.get("request_timeout_ms", 40000)) / 1000 + 5

    async def publish(
        self,
        producer: AIOKafkaProducer,
        records: Iterable[Record],
        on_bad: Callable[[str, bool], None],
    ) -> int:
        """Send `records` (see `produce`) and wait for every ack; returns the time it took
        in ms (for the Kafka*SendTimer counters).

        Raises:
            PublishError: some record was not acknowledged in time; the caller rolls back.
        """
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.deadline):
                await produce(
                    producer, records, self.partitioner, self.max_request, self.batch_size, on_bad
                )
        except (KafkaError, OSError, TimeoutError) as e:
            raise PublishError(describe(e)) from e
        return int((time.perf_counter() - t0) * 1000)


def header_partition(
    headers: Mapping[str, str],
    header: str,
    default: int | None,
    on_bad: Callable[[str, bool], None],
) -> int | None:
    """The partition an event's `header` names (partitionIdHeader), else `default`; a
    value that is not a partition number is reported to `on_bad` and ignored."""
    v = headers.get(header)
    if v is None:
        return default
    try:
        partition = int(v)
    except ValueError:
        partition = -1
    if partition < 0:
        on_bad(f"header {header}={v!r} is not a partition number; ignored", False)
        return default
    return partition


def producer_kwargs(options: ClientOptions, servers: list[str], client_id: str) -> dict[str, Any]:
    """The AIOKafkaProducer arguments of a component: flumed's defaults (acks=all, batch.size
    DEFAULT_BATCH_BYTES), its `kafka.producer.*` options, `servers`, and `client_id`
    unless the options set one. Called from `start()`: it reads the TLS files.

    Raises:
        OSError, ssl.SSLError: a certificate or key file cannot be read or used.
    """
    kwargs = {"acks": "all", "max_batch_size": DEFAULT_BATCH_BYTES, **options.build()}
    kwargs["bootstrap_servers"] = servers
    kwargs.setdefault("client_id", client_id)
    return kwargs
