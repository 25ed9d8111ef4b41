"""Channel `memory`: a bounded in-process queue. Fast; its content dies with the process."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flumed.channels.base import Channel, Transaction
from flumed.config.keys import key
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event


@dataclass(frozen=True, slots=True)
class MemoryChannelConfig:
    capacity: int = key(100, ge=1, doc="Most events held.")
    transactionCapacity: int = key(100, ge=1, doc="Most events in one transaction.")
    byteCapacity: int = key(
        0, ge=0, doc="Most body bytes held; 0 means no byte limit (Flume: 80% of the heap)."
    )
    byteCapacityBufferPercentage: int = key(
        20, ge=0, le=99, doc="Percent of byteCapacity kept for headers (as Flume)."
    )
    keep_alive: float = key(3.0, name="keep-alive", ge=0, doc="Seconds a put waits for room.")

    def check(self) -> list[str]:
        if self.transactionCapacity > self.capacity:
            return [
                f"transactionCapacity ({self.transactionCapacity}) must not exceed "
                f"capacity ({self.capacity})"
            ]
        return []


class _Waiters:
    """Wake every waiter when something changes; each re-checks its own condition."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next notify, up to `timeout` s. Returns False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class MemoryTransaction(Transaction):
    __slots__ = ("_put", "_put_bytes", "_taken", "_taken_bytes")

    channel: MemoryChannel

    def __init__(self, channel: MemoryChannel) -> None:
        super().__init__(channel)
        self._put: list[Event] = []
        self._put_bytes = 0
        self._taken: list[Event] = []
        self._taken_bytes = 0

    async def _do_put(self, events: Sequence[Event]) -> None:
        ch = self.channel
        if len(self._put) + len(events) > ch.config.transactionCapacity:
            raise ChannelError(
                f"Channel {ch.name}: a transaction of {len(self._put) + len(events)} events "
                f"exceeds transactionCapacity {ch.config.transactionCapacity}; raise "
                "transactionCapacity or lower the source's batch size."
            )
        self._put.extend(events)
        if ch.byte_limit:
            self._put_bytes += sum(len(e.body) for e in events)
        ch.counter.EventPutAttemptCount += len(events)

    async def _do_take(self, max_events: int, timeout: float) -> list[Event]:
        ch = self.channel
        room = ch.config.transactionCapacity - len(self._taken)
        if max_events > room:
            max_events = room
        q = ch._queue
        if not q and timeout > 0:
            deadline = time.monotonic() + timeout
            while not q:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await ch._not_empty.wait(remaining):
                    break
        n = min(max_events, len(q))
        ch.counter.EventTakeAttemptCount += 1
        if n == 0:
            return []
        if n == len(q):
            out = list(q)
            q.clear()
        else:
            pop = q.popleft
            out = [pop() for _ in range(n)]
        self._taken.extend(out)
        if ch.byte_limit:
            self._taken_bytes += sum(len(e.body) for e in out)
        return out

    async def _do_commit(self) -> None:
        ch = self.channel
        if self._put:
            n = len(self._put)
            deadline = time.monotonic() + ch.config.keep_alive
            while not ch._fits(n, self._put_bytes):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await ch._not_full.wait(remaining):
                    if ch._fits(n, self._put_bytes):
                        break
                    raise ChannelFullError(
                        f"Channel {ch.name} is full: {n} events did not fit in "
                        f"{ch.config.keep_alive}s (capacity {ch.config.capacity}, "
                        f"{ch._used} in use). Sinks are likely not keeping up with sources, "
                        "or the channel is too small."
                    )
            ch._queue.extend(self._put)
            ch._used += n
            ch._bytes += self._put_bytes
            ch.counter.EventPutSuccessCount += n
            self._put = []
            ch._not_empty.notify()
        if self._taken:
            n = len(self._taken)
            ch._used -= n
            ch._bytes -= self._taken_bytes
            ch.counter.EventTakeSuccessCount += n
            self._taken = []
            ch._not_full.notify()

    async def _do_rollback(self) -> None:
        ch = self.channel
        self._put = []
        if self._taken:
            # Back to the head, in their order.
            ch._queue.extendleft(reversed(self._taken))
            self._taken = []
            ch._not_empty.notify()


class MemoryChannel(Channel):
    """Bounded by `capacity` events and optionally `byteCapacity` body bytes.

    Taken-but-uncommitted events still count against capacity, as in Flume, so a
    rollback always has room to put them back.
    """

    Config = MemoryChannelConfig
    config: MemoryChannelConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._queue: deque[Event] = deque()
        self._used = 0  # queued + taken-uncommitted
        self._bytes = 0
        pct = config.byteCapacityBufferPercentage
        self.byte_limit = int(config.byteCapacity * (100 - pct) / 100) if config.byteCapacity else 0
        self._not_empty = _Waiters()
        self._not_full = _Waiters()

    def _fits(self, n: int, nbytes: int) -> bool:
        if self._used + n > self.config.capacity:
            return False
        return not (self.byte_limit and self._bytes + nbytes > self.byte_limit)

    def transaction(self) -> MemoryTransaction:
        return MemoryTransaction(self)

    @property
    def size(self) -> int:
        return self._used

    def adopt(self, old: Channel) -> None:
        """Take over the queued events of the channel this one replaces on reload.

        Called by the agent after the old channel's sources and sinks stopped. The
        events keep their order; they may exceed a smaller new capacity until drained.
        """
        if isinstance(old, MemoryChannel) and old._queue:
            self._queue.extend(old._queue)
            n = len(old._queue)
            self._used += n
            self._bytes += sum(len(e.body) for e in old._queue) if self.byte_limit else 0
            old._queue.clear()
            old._used -= n
