"""Channel `memory`: a bounded in-process queue. Fast; its content dies with the process."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flumed.channels.base import Channel, Transaction
from flumed.channels.waiters import Waiters
from flumed.config.keys import key
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
        self._check_capacity(len(self._put), len(events))
        self._put.extend(events)
        if ch.byte_limit:
            self._put_bytes += sum(len(e.body) for e in events)
        ch.counter.EventPutAttemptCount += len(events)

    async def _do_take(self, max_events: int, timeout: float) -> list[Event]:
        ch = self.channel
        max_events = self._take_room(len(self._taken), max_events)
        q = ch._queue
        if not q and timeout > 0:
            await ch._not_empty.wait_until(lambda: bool(q), timeout)
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
            nbytes = self._put_bytes
            if not await ch._not_full.wait_until(lambda: ch._fits(n, nbytes), ch.config.keep_alive):
                raise ch.full_error(n, ch._used)
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
        self._not_empty = Waiters()
        self._not_full = Waiters()

    def _fits(self, n: int, nbytes: int) -> bool:
        if self._used + n > self.config.capacity:
            return False
        return not (self.byte_limit and self._bytes + nbytes > self.byte_limit)

    def transaction(self) -> MemoryTransaction:
        return MemoryTransaction(self)

    @property
    def size(self) -> int:
        return self._used

    def hand_over(self) -> list[Event]:
        """Remove and return every queued event, in order (for the channel that replaces
        this one on reload; called once its sources and sinks stopped)."""
        events = list(self._queue)
        self._queue.clear()
        self._used -= len(events)
        if self.byte_limit:
            self._bytes -= sum(len(e.body) for e in events)
        return events

    def adopt(self, old: Channel) -> None:
        """Take over the queued events of the channel this one replaces on reload.

        Called by the agent after the old channel's sources and sinks stopped. The
        events keep their order; they may exceed a smaller new capacity until drained.
        """
        if isinstance(old, MemoryChannel):
            events = old.hand_over()
            self._queue.extend(events)
            self._used += len(events)
            self._bytes += sum(len(e.body) for e in events) if self.byte_limit else 0
