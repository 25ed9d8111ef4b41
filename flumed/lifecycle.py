"""The component base (a name, a state, start() and stop()) and the shared lifecycle helpers:
`Status` (what a `process()` call reports), `stop_task()` (stop an owned task within a
deadline) and `Backoff` (Flume's capped linear backoff, in one place).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from typing import Any, ClassVar

from flumed.counters import Counter

log = logging.getLogger("flumed.lifecycle")


class LifecycleState(enum.Enum):
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class Status(enum.Enum):
    """What a `process()` call reports, as Flume's PollableSource/Sink.Status."""

    READY = "READY"
    BACKOFF = "BACKOFF"


#: How long a component's own task may take to finish after being asked to stop, when the
#: agent gives no deadline of its own.
DEFAULT_STOP_TIMEOUT = 5.0


class Component:
    """Base of sources, channels and sinks.

    The agent calls `start()` once, then `stop()` once; `stop()` must be idempotent
    and safe to call after a failed start. A component that owns tasks keeps them
    and awaits them in `stop()` (see `stop_task`).
    """

    #: The dataclass of this component's keys (see flumed.config.keys).
    Config: ClassVar[type]
    # The one-line description is the type's registry row (flumed/registry.py).
    #: Flume's counters of this component, built by its kind's base (Source, Channel,
    #: Sink) from the kind's `counter_class`; started and stopped here.
    counter: Counter

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        self.state = LifecycleState.IDLE
        #: The agent's one shutdown deadline (monotonic), set before it calls `stop()`.
        self.stop_deadline: float | None = None
        self._problems: dict[str, tuple[str, float]] = {}

    def stop_timeout(self, default: float = DEFAULT_STOP_TIMEOUT) -> float:
        """Seconds `stop()` may wait for owned tasks: what is left of the agent's shutdown
        deadline (`--grace`), or `default` when stopped outside an agent shutdown."""
        if self.stop_deadline is None:
            return default
        return max(0.0, self.stop_deadline - time.monotonic())

    def report_problem(self, what: str, key: str = "") -> None:
        """Called by the component while something keeps it from working (an unreadable
        input, positions that cannot be saved ...); `/health` shows it until cleared.
        Cheap enough to call on every failed attempt: the first report's time is kept."""
        old = self._problems.get(key)
        self._problems[key] = (what, old[1] if old else time.time())

    def clear_problem(self, key: str = "") -> None:
        """Called by the component once the problem reported under `key` is gone."""
        self._problems.pop(key, None)

    def problems(self) -> list[tuple[str, float]]:
        """What keeps this component from working now: (what, since as Unix time)."""
        return list(self._problems.values())

    async def start(self) -> None:
        """Called by the agent. Raises on failure (bind error, unreadable file ...)."""
        self.state = LifecycleState.RUNNING
        self.counter.start()

    async def stop(self) -> None:
        """Called by the agent. Idempotent."""
        self.state = LifecycleState.STOPPED
        self.counter.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.state.value})"


async def stop_task(
    task: asyncio.Task[Any] | None, timeout: float = DEFAULT_STOP_TIMEOUT, *, who: str = ""
) -> BaseException | None:
    """Wait up to `timeout` seconds for an owned task that was asked to stop, then cancel it.

    Called by a component's `stop()` after it set its stopping flag. Never raises: returns
    the exception the task ended with (None when it ended cleanly or was cancelled), so the
    caller decides whether that means FAILED.
    """
    if task is None:
        return None
    if not task.done():
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
        if not done:
            if who:
                log.warning("%s did not stop within %.1fs; cancelling.", who, timeout)
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception as e:  # noqa: BLE001 - handed to the caller, who decides
            return e
    return None


class Backoff:
    """Capped linear backoff, as Flume's runners: the n-th consecutive failure waits
    min(n * increment, maximum) seconds. `reset()` after a success. With `exponential`,
    as Flume's sink processors set a failed sink aside: min(2^n * increment, maximum).

    `wait(stopping)` sleeps that long unless `stopping` is set first (an Event, so a stop
    never waits out a backoff).
    """

    __slots__ = ("consecutive", "exponential", "increment", "maximum")

    def __init__(
        self, increment: float = 1.0, maximum: float = 5.0, *, exponential: bool = False
    ) -> None:
        self.increment = increment
        self.maximum = maximum
        self.exponential = exponential
        self.consecutive = 0

    def reset(self) -> None:
        self.consecutive = 0

    def next_delay(self) -> float:
        """Count one failure and return how long to wait."""
        self.consecutive += 1
        if self.exponential:
            return min((1 << min(self.consecutive, 30)) * self.increment, self.maximum)
        return min(self.consecutive * self.increment, self.maximum)

    def saturate(self) -> float:
        """Count a failure that should wait the maximum at once (not retriable)."""
        self.consecutive = max(self.consecutive, int(self.maximum / self.increment) or 1)
        return self.maximum

    async def wait(self, stopping: asyncio.Event, delay: float | None = None) -> None:
        seconds = self.next_delay() if delay is None else delay
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)


def deadline_after(seconds: float) -> float:
    """A monotonic deadline `seconds` from now (for one shutdown deadline passed around)."""
    return time.monotonic() + seconds


def remaining(deadline: float) -> float:
    """Seconds left before a monotonic deadline, never negative."""
    return max(0.0, deadline - time.monotonic())
