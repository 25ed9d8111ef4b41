"""The source contracts: event-driven sources and pollable sources with their runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from flumed.counters import SourceCounter
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.lifecycle import Backoff, Component, LifecycleState, stop_task
from flumed.lifecycle import Status as Status
from flumed.routing.processor import ChannelProcessor

log = logging.getLogger("flumed.sources")


class Source(Component):
    """Takes events from the outside and hands batches to `self.processor`.

    The agent sets `processor` before `start()`. An event-driven source binds in
    `start()` (so a bind error fails the start) and, in `stop()`, stops accepting,
    then finishes what is in flight. When `processor.process_batch` raises a
    ChannelError the source must push back on its sender, never drop.
    """

    processor: ChannelProcessor
    counter: SourceCounter
    #: The counter class built for this source (a subclass of SourceCounter may add names).
    counter_class: ClassVar[type[SourceCounter]] = SourceCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.counter = self.counter_class(name)

    async def deliver(
        self,
        events: list[Event],
        stopping: asyncio.Event,
        on_refused: Callable[[ChannelError, int], None],
        *,
        max_backoff: float = 1.0,
        stop_grace: float = 0.0,
    ) -> bool:
        """Commit `events`, holding them until the channel takes them (push-back).

        Called by a source's reading task, which reads nothing more meanwhile. A refused
        batch is offered again: at once after partial progress (the put already waited
        keep-alive), else after a backoff growing to `max_backoff` seconds.
        `on_refused(error, events_left)` is called at each refusal (to pause a socket,
        log rate-limited). Counts EventAcceptedCount, AppendBatchAcceptedCount and
        ChannelWriteFail; the caller counts what it received.

        Returns True once every event is committed; False when `stopping` is set and
        the channel still refuses after `stop_grace` seconds (the caller decides
        whether that is a loss to report or a position not to advance).
        """
        counter = self.counter
        delay = 0.05
        deadline: float | None = None
        while True:
            try:
                await self.processor.process_batch(events)
            except ChannelError as e:
                counter.ChannelWriteFail += 1
                accepted = e.accepted if isinstance(e, ChannelFullError) else 0
                counter.EventAcceptedCount += accepted
                events = events[accepted:]
                on_refused(e, len(events))
                if stopping.is_set():
                    now = time.monotonic()
                    deadline = now + stop_grace if deadline is None else deadline
                    if now >= deadline:
                        return False
                if accepted:
                    delay = 0.05
                    continue
                if stopping.is_set():
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), delay)
                delay = min(delay * 2, max_backoff)
                continue
            counter.EventAcceptedCount += len(events)
            counter.AppendBatchAcceptedCount += 1
            return True


class PollableSource(Source):
    """A source driven by a runner task that calls `process()` in a loop.

    `process()` returns READY when it may be called again at once, BACKOFF when it
    had nothing to do; the runner then waits min(n * backoffSleepIncrement,
    maxBackoffSleep) milliseconds (Flume's PollableSourceRunner).
    """

    backoff_increment_ms = 1000
    max_backoff_ms = 5000

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def process(self) -> Status:
        raise NotImplementedError

    async def start(self) -> None:
        await super().start()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"source-{self.name}")

    async def _run(self) -> None:
        backoff = Backoff(self.backoff_increment_ms / 1000, self.max_backoff_ms / 1000)
        while not self._stopping.is_set():
            try:
                status = await self.process()
            except Exception:
                log.exception("Source %s: process() failed; backing off.", self.name)
                self.counter.GenericProcessingFail += 1
                status = Status.BACKOFF
                backoff.saturate()
            if status is Status.READY:
                backoff.reset()
                continue
            await backoff.wait(self._stopping)

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        # A process() call in flight finishes its batch; a stuck one is cancelled.
        if await stop_task(task, who=f"Source {self.name}") is not None:
            self.state = LifecycleState.FAILED
        await super().stop()
