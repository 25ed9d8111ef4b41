"""Per-component counters with Flume's names (pure: no I/O, no web server).

Components import their counters from here; the HTTP endpoint that serves them lives in
`flumed.metrics`, which only the CLI imports, so `flumed validate` loads no web server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar


def _now_ms() -> int:
    return int(time.time() * 1000)


class Counter:
    """A group of counters for one component. Attributes are Flume's counter names."""

    TYPE: ClassVar[str] = "OTHER"
    NAMES: ClassVar[tuple[str, ...]] = ()
    #: Names whose value goes up and down (Prometheus gauges); every other name only grows.
    GAUGES: ClassVar[frozenset[str]] = frozenset(
        {
            "OpenConnectionCount",
            "ChannelSize",
            "ChannelCapacity",
            "ChannelFillPercentage",
            "StartTime",
            "StopTime",
            "Unhealthy",
            "Closed",
        }
    )

    def __init__(self, name: str) -> None:
        self.name = name
        #: The component's type name (`netcat`, `file` ...), set by the agent; a label.
        self.component_type = ""
        for n in self.NAMES:
            setattr(self, n, 0)
        self.StartTime = 0
        self.StopTime = 0

    def start(self) -> None:
        self.StartTime = _now_ms()
        self.StopTime = 0

    def stop(self) -> None:
        self.StopTime = _now_ms()

    def values(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {n: getattr(self, n) for n in self.NAMES}
        out["StartTime"] = self.StartTime
        out["StopTime"] = self.StopTime
        return out

    def flume_json(self) -> dict[str, str]:
        out = {k: str(v) for k, v in self.values().items()}
        out["Type"] = self.TYPE
        return out


class SourceCounter(Counter):
    TYPE = "SOURCE"
    NAMES: ClassVar[tuple[str, ...]] = (
        "EventReceivedCount",
        "EventAcceptedCount",
        "AppendReceivedCount",
        "AppendAcceptedCount",
        "AppendBatchReceivedCount",
        "AppendBatchAcceptedCount",
        "OpenConnectionCount",
        "EventReadFail",
        "ChannelWriteFail",
        "GenericProcessingFail",
        # flumed's own (listening sources): connections refused past maxConnections,
        # closed by a timeout, and accept() failures (out of file descriptors).
        "ConnectionRefusedCount",
        "ConnectionTimedOutCount",
        "AcceptFailCount",
    )
    EventReceivedCount: int
    EventAcceptedCount: int
    AppendReceivedCount: int
    AppendAcceptedCount: int
    AppendBatchReceivedCount: int
    AppendBatchAcceptedCount: int
    OpenConnectionCount: int
    EventReadFail: int
    ChannelWriteFail: int
    GenericProcessingFail: int
    ConnectionRefusedCount: int
    ConnectionTimedOutCount: int
    AcceptFailCount: int


class UdpSourceCounter(SourceCounter):
    """Flume's source counters, plus the datagrams dropped while the channel was full
    (a UDP sender cannot be pushed back)."""

    NAMES = (*SourceCounter.NAMES, "EventDroppedCount")
    EventDroppedCount: int


class ChannelCounter(Counter):
    TYPE = "CHANNEL"
    NAMES: ClassVar[tuple[str, ...]] = (
        "EventPutAttemptCount",
        "EventPutSuccessCount",
        "EventTakeAttemptCount",
        "EventTakeSuccessCount",
    )
    EventPutAttemptCount: int
    EventPutSuccessCount: int
    EventTakeAttemptCount: int
    EventTakeSuccessCount: int

    def __init__(self, name: str, size: Callable[[], int], capacity: Callable[[], int]) -> None:
        super().__init__(name)
        self._size = size
        self._capacity = capacity

    def values(self) -> dict[str, float | int]:
        out = super().values()
        size, cap = self._size(), self._capacity()
        out["ChannelSize"] = size
        out["ChannelCapacity"] = cap
        out["ChannelFillPercentage"] = (100.0 * size / cap) if cap else 0.0
        return out


class SinkCounter(Counter):
    TYPE = "SINK"
    NAMES: ClassVar[tuple[str, ...]] = (
        "ConnectionCreatedCount",
        "ConnectionClosedCount",
        "ConnectionFailedCount",
        "BatchEmptyCount",
        "BatchUnderflowCount",
        "BatchCompleteCount",
        "EventDrainAttemptCount",
        "EventDrainSuccessCount",
        "EventWriteFail",
        "ChannelReadFail",
    )
    ConnectionCreatedCount: int
    ConnectionClosedCount: int
    ConnectionFailedCount: int
    BatchEmptyCount: int
    BatchUnderflowCount: int
    BatchCompleteCount: int
    EventDrainAttemptCount: int
    EventDrainSuccessCount: int
    EventWriteFail: int
    ChannelReadFail: int

    def batch(self, taken: int, batch_size: int) -> None:
        """Count one take of `taken` events against a batch size, as Flume's sinks do."""
        if taken == 0:
            self.BatchEmptyCount += 1
        elif taken < batch_size:
            self.BatchUnderflowCount += 1
        else:
            self.BatchCompleteCount += 1
