"""The sink contracts: `Sink` (one `process()` per batch) and `BatchSink`, the template
every sink that delivers whole batches builds on."""

from __future__ import annotations

from typing import Any, ClassVar

from flumed.channels.base import Channel
from flumed.counters import SinkCounter
from flumed.event import Event
from flumed.lifecycle import Component, Status
from flumed.tap import HUB

__all__ = ["TAKE_TIMEOUT", "BatchSink", "Sink", "Status"]

#: How long one take waits for a first event before `process()` answers BACKOFF.
TAKE_TIMEOUT = 0.5


class Sink(Component):
    """Drains `self.channel` (set by the agent before `start()`).

    `process()` is called by one SinkRunner, never concurrently. It opens one take
    transaction, takes up to its batch size (waiting up to TAKE_TIMEOUT for the
    first event), delivers, and commits only once the next hop holds the batch.

    Returns READY when it delivered events, BACKOFF when the channel was empty.
    Raises DeliveryError (after rolling back, which `async with` does) when the
    next hop failed; the runner backs off and the events stay in the channel.
    """

    channel: Channel
    counter: SinkCounter
    #: The counter class built for this sink (a subclass of SinkCounter may add names).
    counter_class: ClassVar[type[SinkCounter]] = SinkCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.counter = self.counter_class(name)

    async def process(self) -> Status:
        raise NotImplementedError


class BatchSink(Sink):
    """A sink whose subclass only delivers: `process()` takes, counts, commits or rolls back.

    Per call: `prepare()` (connect before taking anything, so a next hop that is down
    costs the channel nothing), then one take of up to `batch_size` events, then
    `deliver(events)` inside the take transaction; the take commits when `deliver` returns
    and rolls back (events back at the head of the channel, in order) when it raises.
    Counting (BatchEmpty/Underflow/Complete, EventDrainAttempt/Success) happens here.

    Subclasses implement `deliver()` and set `batch_size` (a property reading their config
    is usual). `deliver()` raises DeliveryError when the next hop did not take the batch;
    it must not return before the next hop holds every event (flushed, fsynced, acked).
    """

    @property
    def batch_size(self) -> int:
        n: int = self.config.batchSize
        return n

    async def prepare(self) -> None:
        """Called by `process()` before each take. Raise DeliveryError to back off."""

    async def deliver(self, events: list[Event]) -> None:
        """Hand `events` (never empty) to the next hop; raise DeliveryError on failure."""
        raise NotImplementedError

    async def process(self) -> Status:
        await self.prepare()
        n = self.batch_size
        counter = self.counter
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(n, TAKE_TIMEOUT)
            counter.batch(len(events), n)
            if not events:
                return Status.BACKOFF
            counter.EventDrainAttemptCount += len(events)
            await self.deliver(events)
        counter.EventDrainSuccessCount += len(events)
        HUB.offer(self.name, events)
        return Status.READY
