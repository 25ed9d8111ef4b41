"""Sink `null`: takes batches and discards them (for tests and benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

from flumed.config.keys import key
from flumed.event import Event
from flumed.sinks.base import BatchSink


@dataclass(frozen=True, slots=True)
class NullSinkConfig:
    batchSize: int = key(100, ge=1, doc="Events taken per transaction.")


class NullSink(BatchSink):
    Config = NullSinkConfig
    config: NullSinkConfig

    async def deliver(self, events: list[Event]) -> None:
        """Nothing to do: the take commits and the events are gone."""
