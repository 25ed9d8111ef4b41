"""Source `seq`: a counter, for tests and benchmarks. Bodies are the numbers 0, 1, 2 ..."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.sources.base import PollableSource, Status

log = logging.getLogger("flumed.sources.seq")


@dataclass(frozen=True, slots=True)
class SeqConfig:
    batchSize: int = key(1, ge=1, doc="Events generated per channel transaction.")
    totalEvents: int = key(2**63 - 1, ge=0, doc="Stop after this many (default: no end).")


class SequenceGeneratorSource(PollableSource):
    """Generates batches of `batchSize` events until `totalEvents`.

    A batch refused by a full channel is offered again (the counter does not move),
    so the sequence has no gaps.
    """

    Config = SeqConfig
    config: SeqConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.next = 0
        self._pending: list[Event] | None = None

    async def process(self) -> Status:
        cfg = self.config
        if self._pending is None:
            if self.next >= cfg.totalEvents:
                return Status.BACKOFF
            end = min(self.next + cfg.batchSize, cfg.totalEvents)
            self._pending = [Event(b"%d" % i) for i in range(self.next, end)]
        batch = self._pending
        self.counter.EventReceivedCount += len(batch)
        self.counter.AppendBatchReceivedCount += 1
        try:
            await self.processor.process_batch(batch)
        except ChannelError as e:
            self.counter.ChannelWriteFail += 1
            log.debug("Source %s: batch refused: %s", self.name, e)
            return Status.BACKOFF
        self._pending = None
        self.next += len(batch)
        self.counter.EventAcceptedCount += len(batch)
        self.counter.AppendBatchAcceptedCount += 1
        return Status.READY
