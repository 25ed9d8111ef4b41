"""SinkRunner and the sink processor contract, with the `default` processor.

One SinkRunner task per sink group (a lone sink is a group of one with the
`default` processor). The runner calls `processor.process()` in a loop and backs off
as Flume's SinkRunner.PollingRunner does: after a failure it waits
min(consecutive * 1 s, 5 s) before trying again. An empty channel is not a failure:
the sink's take already waited for events, so the runner calls again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from flumed.errors import FlumedError
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


class SinkRunner:
    """Owns the task that drives one sink processor."""

    def __init__(self, processor: SinkProcessor) -> None:
        self.processor = processor
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._drain = True
        self._last_error_log = 0.0
        self.failures = 0
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
        consecutive = 0
        while True:
            try:
                status = await self.processor.process()
            except FlumedError as e:
                self._failed(e)
                self.failures += 1
                consecutive += 1
                self._log_failure(e)
                if not e.retriable:
                    consecutive = int(MAX_BACKOFF / BACKOFF_INCREMENT)
                await self._backoff(min(consecutive * BACKOFF_INCREMENT, MAX_BACKOFF))
                if self._stopping.is_set():
                    return
                continue
            except Exception as e:
                self._failed(e)
                self.failures += 1
                consecutive = int(MAX_BACKOFF / BACKOFF_INCREMENT)
                log.exception("Sink runner %s: unexpected error; backing off.", self.name)
                del e
                await self._backoff(MAX_BACKOFF)
                if self._stopping.is_set():
                    return
                continue
            consecutive = 0
            self.failing_since = None
            if self._stopping.is_set() and (status is Status.BACKOFF or not self._drain):
                return  # drained, or asked to stop after this batch

    def _failed(self, e: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
        self.last_error = str(e) or type(e).__name__

    def _log_failure(self, e: Exception) -> None:
        # One line per failure streak every few seconds, not one per retry.
        now = time.monotonic()
        if now - self._last_error_log >= 5.0:
            self._last_error_log = now
            log.warning("Sink %s could not deliver, backing off: %s", self.name, e)

    async def _backoff(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self, grace: float, drain: bool = True) -> None:
        """Stop the runner: with `drain`, once the channels are empty; without, after the
        batch in flight. Past `grace` seconds the task is cancelled, which rolls back
        the sink's take, so nothing is lost.
        """
        self._drain = drain
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.warning("Sink runner %s did not drain within %.1fs; cancelling.", self.name, grace)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
