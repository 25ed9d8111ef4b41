"""Consuming from Kafka: `getmany()` with a real time limit, and `decode_record()`, the
one place a consumed record becomes an event (the Kafka source and channel)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.errors import KafkaError

from flumed.errors import FlumedError
from flumed.event import Event
from flumed.kafka.codec import decode_flume_event
from flumed.kafka.logs import describe


async def getmany(consumer: Any, timeout: float, max_records: int) -> dict[Any, list[Any]]:
    """`consumer.getmany`, returning {} after `timeout` s even while a rebalance is in
    progress (aiokafka then waits for the new assignment with no time limit)."""
    try:
        async with asyncio.timeout(timeout + 0.05):
            found: dict[Any, list[Any]] = await consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
            return found
    except TimeoutError:
        return {}


def decode_record(
    record: Any, flume_format: bool, on_bad: Callable[[Any, str], None]
) -> Event | None:
    """The event of a consumed record: its value as the body, or, with `flume_format`
    (useFlumeEventFormat / parseAsFlumeEvent), the AvroFlumeEvent it holds. A record
    that is not one is reported to `on_bad(record, why)` and gives None (skipped)."""
    value = record.value if record.value is not None else b""
    if not flume_format:
        return Event(value, {})
    try:
        return decode_flume_event(value)
    except ValueError as e:
        on_bad(record, f"record {record.topic}-{record.partition}@{record.offset} skipped: {e}")
        return None


def partitions_text(tps: Iterable[Any]) -> str:
    """`topic-0, topic-1` for a log line about an assignment (TopicPartitions)."""
    return ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(tps)) or "none"


async def commit_offsets(consumer: Any, offsets: dict[Any, int], timeout: float) -> int:
    """Commit `offsets` of the partitions `consumer` still owns, within `timeout` s.

    Returns the time it took in ms (for KafkaCommitTimer), 0 when there was nothing to
    commit. Raises CommitError: committing failed, which only means those records may be
    read again (by this member or the next owner of the partition); callers log it.
    """
    assigned = consumer.assignment()
    mine = {tp: o for tp, o in offsets.items() if tp in assigned}
    if not mine:
        return 0
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await consumer.commit(mine)
    except (KafkaError, OSError, TimeoutError) as e:
        raise CommitError(describe(e)) from e
    return int((time.perf_counter() - t0) * 1000)


class CommitError(FlumedError):
    """Offsets were not committed (the message says why)."""

    retriable = True
