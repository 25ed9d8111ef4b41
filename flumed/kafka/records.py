"""Consuming from Kafka: `getmany()` with a real time limit, and `decode_record()`, the
one place a consumed record becomes an event (the Kafka source and channel)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flumed.event import Event
from flumed.kafka.codec import decode_flume_event


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
