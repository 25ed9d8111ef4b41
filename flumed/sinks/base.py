"""The sink contract."""

from __future__ import annotations

from typing import Any

from flumed.channels.base import Channel
from flumed.counters import SinkCounter
from flumed.lifecycle import Component, Status

__all__ = ["Sink", "Status"]

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

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.counter = SinkCounter(name)

    async def process(self) -> Status:
        raise NotImplementedError

    async def start(self) -> None:
        await super().start()
        self.counter.start()

    async def stop(self) -> None:
        await super().stop()
        self.counter.stop()
