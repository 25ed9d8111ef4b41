"""Counters with the extra names of Flume's KafkaSourceCounter, KafkaSinkCounter and
KafkaChannelCounter."""

from __future__ import annotations

import time

from flumed.counters import ChannelCounter, SinkCounter, SourceCounter


class KafkaSourceCounter(SourceCounter):
    NAMES = (*SourceCounter.NAMES, "KafkaEventGetTimer", "KafkaCommitTimer", "KafkaEmptyCount")
    KafkaEventGetTimer: int
    KafkaCommitTimer: int
    KafkaEmptyCount: int


class KafkaSinkCounter(SinkCounter):
    NAMES = (*SinkCounter.NAMES, "KafkaEventSendTimer", "RollbackCount")
    KafkaEventSendTimer: int
    RollbackCount: int


class KafkaChannelCounter(ChannelCounter):
    NAMES = (
        *ChannelCounter.NAMES,
        "KafkaEventGetTimer",
        "KafkaEventSendTimer",
        "KafkaCommitTimer",
        "RollbackCount",
        "EventPutErrorCount",
        "EventTakeErrorCount",
    )
    EventPutErrorCount: int
    EventTakeErrorCount: int
    KafkaEventGetTimer: int
    KafkaEventSendTimer: int
    KafkaCommitTimer: int
    RollbackCount: int


def elapsed_ms(t0: float) -> int:
    """Milliseconds since `t0` (a time.perf_counter()), for the Kafka*Timer counters."""
    return int((time.perf_counter() - t0) * 1000)
