"""What the TCP stream sources share (netcat, syslogtcp, multiport_syslogtcp).

`StreamConnection` is the asyncio protocol of one client: `data_received` only
buffers (pausing the socket past HIGH_WATER bytes) and the connection's own task,
owned by the source, reads the buffered input with `read()`, frames it, and commits
whole batches. `commit_held` is the push-back commit: a batch the channel refuses is
held and offered again while the connection reads nothing more, so TCP pushes back on
the sender. `close_connections` is the stop sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, cast

from flumed.counters import SourceCounter
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source

log = logging.getLogger("flumed.sources")

#: Stop reading a connection once this much unprocessed input is buffered.
HIGH_WATER = 1 << 20
#: Longest wait between offers of a batch the channel refused.
RETRY_BACKOFF_MAX = 1.0
#: How long `stop()` keeps offering held batches (the sinks still drain meanwhile).
STOP_GRACE = 5.0


class StreamOwner(Protocol):
    """What a StreamConnection needs of its source."""

    name: str
    counter: SourceCounter
    _connections: set[Any]

    def _serve(self, conn: Any) -> Coroutine[Any, Any, None]: ...


class StreamConnection(asyncio.Protocol):
    """One client. `data_received` only buffers; the connection's task does the work."""

    def __init__(self, source: StreamOwner) -> None:
        self.source = source
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.wakeup = asyncio.Event()
        self.eof = False
        self.paused = False
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local_port = 0

    @property
    def peer_name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        if local:
            self.local_port = int(local[1])
        self.source.counter.OpenConnectionCount += 1
        self.source._connections.add(self)
        self.task = asyncio.create_task(
            self.source._serve(self), name=f"{self.source.name}-{self.peer_name}"
        )

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= HIGH_WATER:
            self.pause()
        self.wakeup.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.wakeup.set()
        return True  # keep the write side open for the last answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.wakeup.set()
        self.source.counter.OpenConnectionCount -= 1

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()

    async def read(self) -> bytes | None:
        """The input buffered since the last call, waiting for some; None at EOF or stop.

        Called by the connection's task only. Reading resumes while it waits.
        """
        while not self.chunks:
            if self.eof or self.stopping:
                return None
            self.resume()
            await self.wakeup.wait()
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        self.wakeup.clear()
        return data

    def close(self) -> None:
        """Called by the connection's task when it ends."""
        self.source._connections.discard(self)
        if self.transport is not None:
            self.transport.close()


async def close_connections(conns: Iterable[StreamConnection], grace: float) -> None:
    """Stop reading every connection, let each task commit what it received, then end.

    Tasks still running after `grace` seconds are cancelled.
    """
    conns = list(conns)
    for c in conns:
        c.stopping = True
        c.pause()
        c.wakeup.set()
    tasks = [c.task for c in conns if c.task is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for t in pending:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


async def commit_held(
    source: Source,
    events: list[Event],
    stopping: asyncio.Event,
    warn: RateLimitedLog,
    pause: Callable[[], None] | None = None,
) -> None:
    """Commit `events` for a connection, holding them until the channel takes them.

    `pause` stops reading the socket at the first refusal, so TCP pushes back. Gives
    up only when `stopping` is set and the channel stays full for STOP_GRACE seconds;
    that loss is logged as an error.
    """
    left = len(events)

    def refused(e: ChannelError, n: int) -> None:
        nonlocal left
        left = n
        if pause is not None:
            pause()
        warn.warn(
            "Source %s: channel refused a batch; holding %d events and reading nothing "
            "more until it fits (push-back): %s",
            source.name,
            n,
            e,
        )

    if not await source.deliver(
        events, stopping, refused, max_backoff=RETRY_BACKOFF_MAX, stop_grace=STOP_GRACE
    ):
        log.error(
            "Source %s: stopping with %d received events the channel did not take; they are lost.",
            source.name,
            left,
        )
