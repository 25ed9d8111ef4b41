"""Source `stress` (Flume's org.apache.flume.source.StressSource): fixed-size events as
fast as the channel takes them, or at `maxEventsPerSecond`, for load tests.

Keys as Flume's: `size` (body bytes, 500), `maxTotalEvents` (events offered, -1 = no
limit), `maxSuccessfulEvents` (events committed, -1 = no limit), `batchSize` (1),
`maxEventsPerSecond` (0 = no limit). As in Flume, every body is the same random bytes,
and a batch the channel refuses counts toward maxTotalEvents; unlike Flume the refused
batch is offered again rather than lost (the source pushes back like every other).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.sources.base import PollableSource, Status


@dataclass(frozen=True, slots=True)
class StressSourceConfig:
    size: int = key(500, ge=0, doc="Body size in bytes.")
    maxTotalEvents: int = key(-1, ge=-1, doc="Stop after offering this many (-1: no limit).")
    maxSuccessfulEvents: int = key(-1, ge=-1, doc="Stop after committing this many (-1: no limit).")
    batchSize: int = key(1, ge=1, doc="Events per channel transaction.")
    maxEventsPerSecond: int = key(0, ge=0, doc="Rate limit (0: as fast as the channel takes).")


class StressSource(PollableSource):
    """Offers batches of one shared random body until a limit is reached."""

    Config = StressSourceConfig
    config: StressSourceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.body = os.urandom(config.size)
        self.total = 0  # events offered
        self.successful = 0  # events committed
        self._pending: list[Event] | None = None
        self._started = 0.0

    def _next_size(self) -> int:
        cfg = self.config
        n = cfg.batchSize
        if cfg.maxTotalEvents >= 0:
            n = min(n, cfg.maxTotalEvents - self.total)
        if cfg.maxSuccessfulEvents >= 0:
            n = min(n, cfg.maxSuccessfulEvents - self.successful)
        return n

    async def process(self) -> Status:
        cfg = self.config
        if self._pending is None:
            n = self._next_size()
            if n <= 0:
                return Status.BACKOFF
            self._pending = [Event(self.body) for _ in range(n)]
        if cfg.maxEventsPerSecond:
            # Sleep until this batch is due: no busy loop, one timer per batch.
            if not self._started:
                self._started = time.monotonic()
            due = self._started + self.total / cfg.maxEventsPerSecond
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        batch = self._pending
        self.total += len(batch)
        self.counter.EventReceivedCount += len(batch)
        self.counter.AppendBatchReceivedCount += 1
        try:
            await self.processor.process_batch(batch)
        except ChannelError:
            self.counter.ChannelWriteFail += 1
            return Status.BACKOFF
        self._pending = None
        self.successful += len(batch)
        self.counter.EventAcceptedCount += len(batch)
        self.counter.AppendBatchAcceptedCount += 1
        return Status.READY
