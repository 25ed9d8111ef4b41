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
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, cast

from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.metrics import SourceCounter
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
    """Commit `events`, holding them until the channel takes them (push-back).

    Called by a source's reading task, which reads nothing more meanwhile; `pause` is
    called when the channel refuses, to stop reading the socket at once. Gives up only
    when `stopping` is set and the channel stays full for STOP_GRACE seconds; that loss
    is logged as an error.
    """
    counter = source.counter
    delay = 0.05
    deadline = 0.0
    while True:
        try:
            await source.processor.process_batch(events)
        except ChannelError as e:
            counter.ChannelWriteFail += 1
            accepted = e.accepted if isinstance(e, ChannelFullError) else 0
            counter.EventAcceptedCount += accepted
            events = events[accepted:]
            if pause is not None:
                pause()
            if stopping.is_set():
                now = time.monotonic()
                deadline = deadline or now + STOP_GRACE
                if now >= deadline:
                    log.error(
                        "Source %s: stopping with %d received events the channel did not "
                        "take; they are lost: %s",
                        source.name,
                        len(events),
                        e,
                    )
                    return
            warn.warn(
                "Source %s: channel refused a batch; holding %d events and reading nothing "
                "more until it fits (push-back): %s",
                source.name,
                len(events),
                e,
            )
            if accepted:
                # The put already waited keep-alive; progress means room is coming.
                delay = 0.05
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF_MAX)
            continue
        counter.EventAcceptedCount += len(events)
        return
