"""SinkRunner and the sink processor contract, with the `default` processor.

One SinkRunner task per sink group (a lone sink is a group of one with the
`default` processor). The runner calls `processor.process()` in a loop and backs off
as Flume's SinkRunner.PollingRunner does: after a failure it waits
min(consecutive * 1 s, 5 s) before trying again. An empty channel is not a failure:
the sink's take already waited for events, so the runner calls again at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from flumed.errors import FlumedError
from flumed.lifecycle import Backoff, stop_task
from flumed.logs import RateLimitedLog
from flumed.sinks.base import Sink, Status

log = logging.getLogger("flumed.sinks")

BACKOFF_INCREMENT = 1.0
MAX_BACKOFF = 5.0


class SinkProcessor:
    """Decides which of its sinks processes next. Called by one SinkRunner only.

    `process()` returns the sink's Status, or raises DeliveryError when no sink
    could deliver.
    """

    Config: ClassVar[type | None] = None

    def __init__(self, name: str, sinks: Sequence[Sink], config: Any = None) -> None:
        self.name = name
        self.sinks = list(sinks)
        self.config = config

    async def process(self) -> Status:
        raise NotImplementedError


class DefaultSinkProcessor(SinkProcessor):
    """A single sink, called as it is."""

    async def process(self) -> Status:
        return await self.sinks[0].process()


class Penalties:
    """Sinks of a group set aside after a failure, for min(2^failures * 1 s, maximum)
    (Flume's FailoverSinkProcessor and backoff of LoadBalancingSinkProcessor).

    Failures are visible: each sink put into backoff is logged (rate-limited per sink,
    naming the group, the sink and the cause), its return is logged once, and
    `backing_off()` tells the health check which sinks are out and since when.
    """

    def __init__(self, sinks: Sequence[Sink], maximum: float, group: str = "") -> None:
        self.group = group
        self._backoff = {s.name: Backoff(1.0, maximum, exponential=True) for s in sinks}
        self._until = dict.fromkeys(self._backoff, 0.0)
        #: sink name -> (cause, Unix time of the first failure of its streak)
        self.failing: dict[str, tuple[str, float]] = {}
        self._warn = {name: RateLimitedLog(log, interval=5.0) for name in self._backoff}

    def available(self, sink: Sink, now: float) -> bool:
        return self._until[sink.name] <= now

    def failed(self, sink: Sink, cause: object = "") -> None:
        delay = self._backoff[sink.name].next_delay()
        self._until[sink.name] = time.monotonic() + delay
        since = self.failing.get(sink.name, ("", time.time()))[1]
        self.failing[sink.name] = (str(cause) or "delivery failed", since)
        self._warn[sink.name].warn(
            "Sink group %s: sink %s failed, backing off for %.0fs: %s",
            self.group,
            sink.name,
            delay,
            cause,
        )

    def succeeded(self, sink: Sink) -> None:
        b = self._backoff[sink.name]
        if b.consecutive:
            log.info(
                "Sink group %s: sink %s delivers again after %d failures.",
                self.group,
                sink.name,
                b.consecutive,
            )
        b.reset()
        self.failing.pop(sink.name, None)

    def backing_off(self) -> list[tuple[str, str, float]]:
        """(sink, cause, since) for every sink whose last attempt failed."""
        return [(name, cause, since) for name, (cause, since) in self.failing.items()]


class SinkRunner:
    """Owns the task that drives one sink processor."""

    def __init__(self, processor: SinkProcessor) -> None:
        self.processor = processor
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._drain = True
        self._backoff = Backoff(BACKOFF_INCREMENT, MAX_BACKOFF)
        # One line per failure streak every few seconds, not one per retry.
        self._warn = RateLimitedLog(log, interval=5.0)
        #: Unix time of the first failure of the current streak (None while delivering),
        #: and that streak's last error: read by the health check.
        self.failing_since: float | None = None
        self.last_error = ""

    @property
    def name(self) -> str:
        return self.processor.name

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"sink-runner-{self.name}")

    async def _run(self) -> None:
        backoff = self._backoff
        while True:
            try:
                status = await self.processor.process()
            except FlumedError as e:
                self._failed(e)
                self._warn.warn("Sink %s could not deliver, backing off: %s", self.name, e)
                await backoff.wait(self._stopping, None if e.retriable else backoff.saturate())
                if self._stopping.is_set():
                    return
                continue
            except Exception as e:
                self._failed(e)
                log.exception("Sink runner %s: unexpected error; backing off.", self.name)
                await backoff.wait(self._stopping, backoff.saturate())
                if self._stopping.is_set():
                    return
                continue
            backoff.reset()
            self.failing_since = None
            if self._stopping.is_set() and (status is Status.BACKOFF or not self._drain):
                return  # drained, or asked to stop after this batch

    def _failed(self, e: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
        self.last_error = str(e) or type(e).__name__

    async def stop(self, grace: float, drain: bool = True) -> None:
        """Stop the runner: with `drain`, once the channels are empty; without, after the
        batch in flight. Past `grace` seconds the task is cancelled, which rolls back
        the sink's take, so nothing is lost.
        """
        self._drain = drain
        self._stopping.set()
        task, self._task = self._task, None
        await stop_task(task, grace, who=f"Sink runner {self.name}")
