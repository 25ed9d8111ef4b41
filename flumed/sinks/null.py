"""Sink `null`: takes batches and discards them (for tests and benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

from flumed.config.keys import key
from flumed.sinks.base import TAKE_TIMEOUT, Sink, Status


@dataclass(frozen=True, slots=True)
class NullSinkConfig:
    batchSize: int = key(100, ge=1)


class NullSink(Sink):
    Config = NullSinkConfig
    description = "Discards every event."
    config: NullSinkConfig

    async def process(self) -> Status:
        n = self.config.batchSize
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(n, TAKE_TIMEOUT)
        self.counter.batch(len(events), n)
        if not events:
            return Status.BACKOFF
        self.counter.EventDrainAttemptCount += len(events)
        self.counter.EventDrainSuccessCount += len(events)
        return Status.READY
