"""The channel transaction contract (Flume's Channel/Transaction in asyncio terms).

Usage, by a source's channel processor::

    async with channel.transaction() as tx:
        await tx.put_batch(events)        # commit on clean exit

and by a sink::

    async with channel.transaction() as tx:
        events = await tx.take_batch(batch_size, timeout)
        await deliver(events)             # raise → rollback: events back at the head

A transaction is a put or a take transaction, never both, and is used by the task
that opened it. A put batch goes in whole or not at all: room is reserved at commit,
waiting up to `keep-alive` seconds, then ChannelFullError. A rolled-back take puts its
events back at the head of the channel, in their order.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from types import TracebackType
from typing import Any, ClassVar

from flumed.counters import ChannelCounter
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.lifecycle import Component


class TxState(enum.Enum):
    NEW = 0
    OPEN = 1
    COMMITTED = 2
    ROLLED_BACK = 3
    CLOSED = 4


class Transaction:
    """One channel transaction. Subclasses implement the `_do_*` methods only.

    The public methods check the state machine and the owning task, so that misuse is
    a ChannelError at the call, not a corrupt channel later.
    """

    __slots__ = ("_kind", "_owner", "channel", "state")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.state = TxState.NEW
        self._kind: str | None = None
        self._owner: asyncio.Task[Any] | None = None

    # -- context manager -------------------------------------------------------------
    async def __aenter__(self) -> Transaction:
        self.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.state is TxState.OPEN:
                if exc_type is None:
                    await self.commit()
                else:
                    await self.rollback()
        finally:
            self.state = TxState.CLOSED

    # -- public API ------------------------------------------------------------------
    def begin(self) -> None:
        if self.state is not TxState.NEW:
            raise ChannelError(f"Channel {self.channel.name}: transaction begun twice.")
        self._owner = asyncio.current_task()
        self.state = TxState.OPEN

    def _check(self, kind: str) -> None:
        if self.state is not TxState.OPEN:
            raise ChannelError(
                f"Channel {self.channel.name}: {kind} on a transaction that is {self.state.name}."
            )
        if self._owner is not asyncio.current_task():
            raise ChannelError(f"Channel {self.channel.name}: transaction used by another task.")
        if self._kind is None:
            self._kind = kind
        elif self._kind != kind:
            raise ChannelError(
                f"Channel {self.channel.name}: a transaction is a put or a take, not both."
            )

    async def put_batch(self, events: Sequence[Event]) -> None:
        """Stage `events` for commit.

        Raises:
            ChannelError: past transactionCapacity, or on misuse.
        """
        self._check("put")
        await self._do_put(events)

    async def take_batch(self, max_events: int, timeout: float = 0.0) -> list[Event]:
        """Take up to `max_events`, waiting up to `timeout` s for the first one.

        Returns an empty list when nothing arrived in time.
        """
        self._check("take")
        return await self._do_take(max_events, timeout)

    async def commit(self) -> None:
        if self.state is not TxState.OPEN:
            raise ChannelError(f"Channel {self.channel.name}: commit on {self.state.name}.")
        try:
            await self._do_commit()
        except BaseException:
            # A failed commit leaves nothing half-done: put nothing, take back.
            await self._do_rollback()
            self.state = TxState.ROLLED_BACK
            raise
        self.state = TxState.COMMITTED

    async def rollback(self) -> None:
        if self.state is not TxState.OPEN:
            raise ChannelError(f"Channel {self.channel.name}: rollback on {self.state.name}.")
        self.state = TxState.ROLLED_BACK
        await self._do_rollback()

    # -- for subclasses --------------------------------------------------------------
    def _check_capacity(self, staged: int, adding: int) -> None:
        """Raise the standard ChannelError when a transaction holding `staged` events
        would pass the channel's transactionCapacity with `adding` more."""
        cap = self.channel.transaction_capacity
        if staged + adding > cap:
            raise ChannelError(
                f"Channel {self.channel.name}: a transaction of {staged + adding} events "
                f"exceeds transactionCapacity {cap}; raise transactionCapacity or lower the "
                "source's batch size."
            )

    def _take_room(self, taken: int, max_events: int) -> int:
        """How many events a take may return when the transaction already holds `taken`."""
        return min(max_events, self.channel.transaction_capacity - taken)

    async def _do_put(self, events: Sequence[Event]) -> None:
        raise NotImplementedError

    async def _do_take(self, max_events: int, timeout: float) -> list[Event]:
        raise NotImplementedError

    async def _do_commit(self) -> None:
        raise NotImplementedError

    async def _do_rollback(self) -> None:
        raise NotImplementedError


class Channel(Component):
    """A bounded, transactional buffer of events.

    Channels never drop: a put that does not fit waits `keep-alive` seconds, then
    raises ChannelFullError. Several tasks may hold transactions at once.
    """

    counter: ChannelCounter
    #: The counter class built for this channel (a subclass may add names).
    counter_class: ClassVar[type[ChannelCounter]] = ChannelCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.counter = self.counter_class(name, lambda: self.size, lambda: self.capacity)

    def transaction(self) -> Transaction:
        raise NotImplementedError

    def full_error(self, n: int, used: int) -> ChannelFullError:
        """The error of a put of `n` events that found no room within keep-alive."""
        return ChannelFullError(
            f"Channel {self.name} is full: {n} events did not fit in "
            f"{self.config.keep_alive}s (capacity {self.capacity}, {used} in use). Sinks are "
            "likely not keeping up with sources, or the channel is too small."
        )

    @property
    def size(self) -> int:
        """Events committed and not yet taken-and-committed."""
        raise NotImplementedError

    @property
    def capacity(self) -> int:
        """Most events held (the `capacity` key, by default)."""
        return int(self.config.capacity)

    @property
    def transaction_capacity(self) -> int:
        """Most events in one transaction (the `transactionCapacity` key, by default)."""
        return int(self.config.transactionCapacity)
