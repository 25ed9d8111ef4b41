"""Channel `spillablememory`: a memory channel that overflows into a file channel.

A committed put goes to the memory store when it has room. When memory is full, the
put waits up to `overflowTimeout` seconds for room, then spills the whole batch into
the overflow (a file channel on `dataDirs`). While the overflow holds events, a put
that does not fit in memory spills at once (no wait), as Flume's "overflow activated".

Order. The channel keeps an ordered record of segments, `[store, count]`: n events in
memory, then m in the overflow, then k in memory... A take walks the record from its
head and takes each segment's events from the head of its store, so events come out in
the order their puts committed, across both stores. Takers claim from the record one at
a time (a lock held only while claiming); a rolled-back take returns its events to the
head of their stores (the stores do that) and its segments to the head of the record.

Durability. What is in memory at a crash (kill -9, power loss) is lost, as in Flume;
what had overflowed is not, and after a restart the overflow's events are taken
first. A clean stop writes the memory's events into the overflow, so a stop or a
reload loses nothing (they then come after the overflow's older events).

See docs/spillable-memory-channel.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flumed.channels.base import Channel, Transaction, TxState
from flumed.channels.file import FileChannel, FileChannelConfig
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.channels.waiters import Waiters
from flumed.config.keys import key, prefix
from flumed.counters import ChannelCounter
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event

log = logging.getLogger("flumed.channels.spillablememory")

MB = 1 << 20
#: The file channel's defaults for its keys repeated here.
DEFAULT_CACHE_BYTES = 64 * MB
#: Segment stores in the order record.
MEM, OVF = "memory", "overflow"


@dataclass(frozen=True, slots=True)
class SpillableMemoryChannelConfig:
    memoryCapacity: int = key(
        10_000, ge=0, doc="Most events in memory; 0 sends every put to the overflow."
    )
    overflowCapacity: int = key(
        100_000_000, ge=0, doc="Most events in the overflow file channel; 0 disables it."
    )
    overflowTimeout: float = key(
        3.0, ge=0, doc="Seconds a put waits for room in memory before it spills to the overflow."
    )
    overflowDeactivationThreshold: int = key(
        5,
        ge=0,
        le=100,
        doc="Accepted; flumed ends the overflow's no-wait mode when the overflow is empty.",
    )
    byteCapacity: int = key(
        0, ge=0, doc="Most body bytes in memory; 0 means no byte limit (Flume: 80% of the heap)."
    )
    byteCapacityBufferPercentage: int = key(
        20, ge=0, le=99, doc="Percent of byteCapacity kept for headers (as Flume)."
    )
    avgEventSize: int = key(
        500, ge=1, doc="Accepted; flumed counts the real body bytes against byteCapacity."
    )
    transactionCapacity: int = key(
        100, ge=1, doc="Most events in one transaction (also the overflow's)."
    )
    # The overflow file channel's keys (docs/file-channel.md).
    checkpointDir: str = key("", doc="Overflow: used as the directory when dataDirs is not set.")
    dataDirs: str = key("", doc="Overflow: directory of the file channel's database.")
    minimumRequiredSpace: int = key(
        500 * MB, ge=0, doc="Overflow: spills are refused while the disk has less free space."
    )
    fsyncPerTransaction: bool = key(True, doc="Overflow: fsync every commit.")
    cacheBytes: int = key(
        DEFAULT_CACHE_BYTES, ge=0, doc="Overflow: bytes of recent batches kept decoded."
    )
    encryption: dict[str, Any] = prefix("encryption", doc="Refused: not supported.")

    IGNORED = {
        **FileChannelConfig.IGNORED,
        **dict.fromkeys(
            ("capacity", "keep-alive"),
            "is set by memoryCapacity / overflowCapacity / overflowTimeout here (as in Flume) "
            "and is ignored",
        ),
    }

    def overflow(self) -> FileChannelConfig:
        """The overflow file channel's configuration (Flume: keep-alive 0, capacity =
        overflowCapacity)."""
        cap = max(self.overflowCapacity, 1)
        return FileChannelConfig(
            checkpointDir=self.checkpointDir,
            dataDirs=self.dataDirs,
            capacity=cap,
            transactionCapacity=min(self.transactionCapacity, cap),
            keep_alive=0.0,
            minimumRequiredSpace=self.minimumRequiredSpace,
            fsyncPerTransaction=self.fsyncPerTransaction,
            cacheBytes=self.cacheBytes,
            encryption=self.encryption,
        )

    def memory(self) -> MemoryChannelConfig:
        cap = max(self.memoryCapacity, 1)
        return MemoryChannelConfig(
            capacity=cap,
            transactionCapacity=min(self.transactionCapacity, cap),
            byteCapacity=self.byteCapacity,
            byteCapacityBufferPercentage=self.byteCapacityBufferPercentage,
            keep_alive=0.0,  # the wait for room is ours: overflowTimeout
        )

    def claims(self) -> list[tuple[str, str]]:
        return self.overflow().claims() if self.overflowCapacity else []

    def check(self) -> list[str]:
        if not self.memoryCapacity and not self.overflowCapacity:
            return ["memoryCapacity and overflowCapacity are both 0: the channel holds nothing"]
        if self.transactionCapacity > max(self.memoryCapacity, self.overflowCapacity):
            return [
                f"transactionCapacity ({self.transactionCapacity}) must not exceed "
                "memoryCapacity or overflowCapacity, the larger of them "
                f"({max(self.memoryCapacity, self.overflowCapacity)})"
            ]
        return self.overflow().check() if self.overflowCapacity else []


async def _settle(task: asyncio.Future[Any]) -> bool:
    """Wait until `task` is done, even through cancellation (an inner commit, once
    started, must end known). Returns True when the caller was cancelled meanwhile."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


class SpillableMemoryChannelCounter(ChannelCounter):
    """The channel counters plus `Unhealthy`: the overflow file channel's (1 while its
    writes fail), so /health and the metrics show a failing overflow disk."""

    def __init__(self, name: str, size: Callable[[], int], capacity: Callable[[], int]) -> None:
        super().__init__(name, size, capacity)
        #: The overflow file channel's counter (set by the channel; None without one).
        self.overflow: ChannelCounter | None = None

    @property
    def Unhealthy(self) -> int:  # Flume's counter name
        ovf = self.overflow
        return int(getattr(ovf, "Unhealthy", 0)) if ovf is not None else 0

    def values(self) -> dict[str, float | int]:
        out = super().values()
        out["Unhealthy"] = self.Unhealthy
        return out


class SpillableTransaction(Transaction):
    """A put commits its batch whole to one store; a take holds one inner take
    transaction per store and the segments it claimed, in take order."""

    __slots__ = ("_inner", "_ntaken", "_put", "_taken")

    channel: SpillableMemoryChannel

    def __init__(self, channel: SpillableMemoryChannel) -> None:
        super().__init__(channel)
        self._put: list[Event] = []
        self._taken: list[list[Any]] = []  # [store, count] segments, in take order
        self._ntaken = 0
        self._inner: dict[str, Transaction] = {}

    async def _do_put(self, events: Sequence[Event]) -> None:
        ch = self.channel
        if len(self._put) + len(events) > ch.transaction_capacity:
            raise ChannelError(
                f"Channel {ch.name}: a transaction of {len(self._put) + len(events)} events "
                f"exceeds transactionCapacity {ch.transaction_capacity}; raise "
                "transactionCapacity or lower the source's batch size."
            )
        self._put.extend(events)
        ch.counter.EventPutAttemptCount += len(events)

    def _inner_tx(self, store: str) -> Transaction:
        tx = self._inner.get(store)
        if tx is None:
            ch = self.channel
            inner = ch.memory if store == MEM else ch.overflow
            assert inner is not None
            tx = self._inner[store] = inner.transaction()
            tx.begin()
        return tx

    async def _do_take(self, max_events: int, timeout: float) -> list[Event]:
        ch = self.channel
        room = ch.transaction_capacity - self._ntaken
        if max_events > room:
            max_events = room
        order = ch._order
        if not order and timeout > 0:
            deadline = time.monotonic() + timeout
            while not order:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await ch._not_empty.wait(remaining):
                    break
        ch.counter.EventTakeAttemptCount += 1
        out: list[Event] = []
        if max_events <= 0 or not order:
            return out
        async with ch._take_lock:
            while len(out) < max_events and order:
                seg = order[0]
                store, avail = seg
                k = min(max_events - len(out), avail)
                # Claim before awaiting the store: a file take may read the disk, and
                # a rollback meanwhile prepends to the record.
                if k == avail:
                    order.popleft()
                else:
                    seg[1] = avail - k
                try:
                    got = await self._inner_tx(store).take_batch(k, 0)
                except BaseException:
                    ch._prepend([[store, k]])
                    raise
                if len(got) < k:
                    # Only a damaged overflow row (quarantined by the file channel) makes
                    # a store hold fewer events than the record says.
                    log.warning(
                        "Channel %s: the %s store gave %d of %d events (damaged rows are "
                        "quarantined, see file-channel-recover).",
                        ch.name,
                        store,
                        len(got),
                        k,
                    )
                if got:
                    if self._taken and self._taken[-1][0] == store:
                        self._taken[-1][1] += len(got)
                    else:
                        self._taken.append([store, len(got)])
                    out.extend(got)
        self._ntaken += len(out)
        return out

    async def _do_commit(self) -> None:
        ch = self.channel
        if self._put:
            events, self._put = self._put, []
            await ch._commit_put(events)
            ch.counter.EventPutSuccessCount += len(events)
            return
        if not self._taken:
            return
        cancelled = False
        otx = self._inner.get(OVF)
        if otx is not None and otx.state is TxState.OPEN:
            # The disk write runs to its end even if we are cancelled, so that what is
            # taken is known: committed (then the memory part commits too) or rolled back.
            task = asyncio.ensure_future(otx.commit())
            cancelled = await _settle(task)
            exc = task.exception()
            if exc is not None:
                raise exc
        mtx = self._inner.get(MEM)
        if mtx is not None and mtx.state is TxState.OPEN:
            await mtx.commit()  # never fails: a memory take commit only frees room
            ch._mem_room.notify()
        n, self._ntaken, self._taken, self._inner = self._ntaken, 0, [], {}
        ch.counter.EventTakeSuccessCount += n
        if ch.overflow is not None and ch._overflow_active and not ch.overflow.size:
            ch._overflow_active = False
        if cancelled:
            raise asyncio.CancelledError

    async def _do_rollback(self) -> None:
        # No await below suspends (the stores' rollbacks are synchronous), so the stores
        # and the record change together, unseen by takers in between.
        self._put = []
        inner, self._inner = self._inner, {}
        for tx in inner.values():
            if tx.state is TxState.OPEN:
                await tx.rollback()
        taken, self._taken = self._taken, []
        self._ntaken = 0
        if taken:
            self.channel._prepend(taken)


class SpillableMemoryChannel(Channel):
    """Memory first, a file channel as overflow; takes keep the put order.

    `memory` / `overflow` are the stores (None when their capacity is 0), used through
    their public transaction API only.
    """

    Config = SpillableMemoryChannelConfig
    config: SpillableMemoryChannelConfig
    counter: SpillableMemoryChannelCounter
    counter_class = SpillableMemoryChannelCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.memory: MemoryChannel | None = (
            MemoryChannel(name, config.memory()) if config.memoryCapacity else None
        )
        self.overflow: FileChannel | None = (
            FileChannel(name, config.overflow()) if config.overflowCapacity else None
        )
        self.counter.overflow = self.overflow.counter if self.overflow is not None else None
        self._order: deque[list[Any]] = deque()
        self._not_empty = Waiters()
        self._mem_room = Waiters()
        self._take_lock = asyncio.Lock()
        self._overflow_active = False

    # -- Channel API -------------------------------------------------------------------
    def transaction(self) -> SpillableTransaction:
        return SpillableTransaction(self)

    @property
    def size(self) -> int:
        return sum(s.size for s in (self.memory, self.overflow) if s is not None)

    @property
    def capacity(self) -> int:
        return self.config.memoryCapacity + self.config.overflowCapacity

    @property
    def transaction_capacity(self) -> int:
        return self.config.transactionCapacity

    @property
    def memory_size(self) -> int:
        return self.memory.size if self.memory is not None else 0

    @property
    def overflow_size(self) -> int:
        return self.overflow.size if self.overflow is not None else 0

    def adopt(self, old: Channel) -> None:
        """Take over a memory channel's queued events on reload (called before start)."""
        if self.memory is not None and type(old) is MemoryChannel and old.size:
            before = self.memory.size
            self.memory.adopt(old)
            self._record(MEM, self.memory.size - before)

    async def start(self) -> None:
        """Open the overflow (its events, from before a restart, are taken first).

        Raises:
            ChannelError: as the file channel's start (directory in use, damaged database).
        """
        if self.memory is not None:
            await self.memory.start()
        if self.overflow is not None:
            await self.overflow.start()
            n = self.overflow.size
            if n:
                self._order.appendleft([OVF, n])
                self._overflow_active = True
        await super().start()

    async def stop(self) -> None:
        """Write the memory's events into the overflow, then close both. Idempotent."""
        if self.memory is not None and self.memory.size:
            await self._spill_memory()
        if self.overflow is not None:
            await self.overflow.stop()
        if self.memory is not None:
            await self.memory.stop()
        self._order.clear()
        self._overflow_active = False
        await super().stop()

    async def _spill_memory(self) -> None:
        mem, ovf = self.memory, self.overflow
        assert mem is not None
        if ovf is None:
            log.warning(
                "Channel %s stops with %d events in memory and no overflow: they are lost.",
                self.name,
                mem.size,
            )
            return
        moved = 0
        try:
            while True:
                async with mem.transaction() as mtx:
                    events = await mtx.take_batch(ovf.transaction_capacity)
                    if not events:
                        break
                    async with ovf.transaction() as otx:
                        await otx.put_batch(events)
                moved += len(events)
        except ChannelError as e:
            log.warning(
                "Channel %s stops with %d events in memory that could not be written to "
                "the overflow (%s): they are lost.",
                self.name,
                mem.size,
                e,
            )
        if moved:
            log.info("Channel %s: wrote %d events from memory to the overflow.", self.name, moved)

    # -- the record --------------------------------------------------------------------
    def _record(self, store: str, n: int) -> None:
        """Append `n` events just committed to `store`. Called with no await between
        the store's commit and here."""
        if not n:
            return
        order = self._order
        if order and order[-1][0] == store:
            order[-1][1] += n
        else:
            order.append([store, n])
        self._not_empty.notify()

    def _prepend(self, segments: list[list[Any]]) -> None:
        order = self._order
        for store, n in reversed(segments):
            if order and order[0][0] == store:
                order[0][1] += n
            else:
                order.appendleft([store, n])
        self._not_empty.notify()

    # -- puts --------------------------------------------------------------------------
    async def _commit_put(self, events: list[Event]) -> None:
        """Commit `events` whole to memory, or after overflowTimeout to the overflow.

        Raises:
            ChannelFullError: neither store took them.
        """
        n = len(events)
        mem, ovf = self.memory, self.overflow
        if mem is not None and n <= mem.transaction_capacity:
            wait = 0.0 if ovf is not None and self._overflow_active else self.config.overflowTimeout
            if await self._put_memory(mem, events, wait):
                return
        if ovf is None:
            raise ChannelFullError(
                f"Channel {self.name} is full: {n} events did not fit in memory in "
                f"{self.config.overflowTimeout}s (memoryCapacity {self.config.memoryCapacity}, "
                f"{self.memory_size} in use) and the overflow is disabled (overflowCapacity 0)."
            )
        if n > ovf.transaction_capacity:
            raise ChannelFullError(
                f"Channel {self.name}: {n} events fit neither in memory nor in the overflow "
                f"(overflowCapacity {self.config.overflowCapacity})."
            )
        otx = ovf.transaction()
        otx.begin()
        await otx.put_batch(events)
        task = asyncio.ensure_future(self._put_overflow(otx, n))
        cancelled = await _settle(task)
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, ChannelFullError):
                raise ChannelFullError(
                    f"Channel {self.name} is full: memory ({self.memory_size} of "
                    f"{self.config.memoryCapacity}) and the overflow: {exc}"
                ) from exc
            raise exc
        if cancelled:
            raise asyncio.CancelledError

    async def _put_overflow(self, otx: Transaction, n: int) -> None:
        await otx.commit()
        # Recorded here, as the commit returns: the file channel finishes its commits
        # in the order it numbered their rows, so the record matches its queue.
        self._overflow_active = True
        self._record(OVF, n)

    async def _put_memory(self, mem: MemoryChannel, events: list[Event], wait: float) -> bool:
        """Commit to memory, waiting up to `wait` s for room. False when it did not fit."""
        deadline = time.monotonic() + wait
        while True:
            tx = mem.transaction()
            tx.begin()
            await tx.put_batch(events)
            try:
                await tx.commit()
            except ChannelFullError:
                pass
            else:
                self._record(MEM, len(events))
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self._mem_room.wait(remaining)
