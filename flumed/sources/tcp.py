"""What the TCP stream sources share (netcat, syslogtcp, multiport_syslogtcp).

`StreamConnection` is the asyncio protocol of one client: `data_received` only
buffers (pausing the socket past HIGH_WATER bytes, see flumed.sources.server) and the
connection's own task,
owned by the source, reads the buffered input with `read()`, frames it, and commits
whole batches. `commit_held` is the push-back commit: a batch the channel refuses is
held and offered again while the connection reads nothing more, so TCP pushes back on
the sender. `close_connections` is the stop sequence.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, cast

from flumed.counters import SourceCounter
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.lifecycle import stop_task
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source
from flumed.sources.server import HIGH_WATER, READ_MAX, FlowControl

log = logging.getLogger("flumed.sources")

#: Longest wait between offers of a batch the channel refused.
RETRY_BACKOFF_MAX = 1.0
#: How long `stop()` keeps offering held batches (the sinks still drain meanwhile).
STOP_GRACE = 5.0


class StreamOwner(Protocol):
    """What a StreamConnection needs of its source (a ListeningSource)."""

    name: str
    counter: SourceCounter
    config: Any
    _connections: set[Any]

    def _serve(self, conn: Any) -> Coroutine[Any, Any, None]: ...

    def _timed_out(self, peer: str, reason: str) -> None: ...


class StreamConnection(asyncio.Protocol):
    """One client. `data_received` only buffers; the connection's task does the work.

    Push-back (flumed.sources.server.FlowControl): reading stops past HIGH_WATER bytes of
    unprocessed input, past HIGH_WATER bytes of answers the peer has not read, and while
    the channel refuses a batch of this connection. So one connection pins at most about
    HIGH_WATER of input, READ_MAX being processed and HIGH_WATER (plus the answers of
    one READ_MAX) of answers.
    """

    def __init__(self, source: StreamOwner) -> None:
        self.source = source
        self.transport: asyncio.Transport | None = None
        self.flow = FlowControl()
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.wakeup = asyncio.Event()
        self.eof = False
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local_port = 0
        #: Loop time at which the message in progress began (frame-timeout's clock).
        self.begun: float | None = None

    @property
    def peer_name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"

    @property
    def paused(self) -> bool:
        return self.flow.paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't check.
        self.transport = cast(asyncio.Transport, transport)
        self.flow.attach(self.transport)
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
            self.flow.hold(FlowControl.INPUT)
        self.wakeup.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.wakeup.set()
        return True  # keep the write side open for the last answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.wakeup.set()
        self.flow.writable.set()
        self.source.counter.OpenConnectionCount -= 1

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def pause(self) -> None:
        """Stop reading while the channel refuses a batch (released by the next read)."""
        self.flow.hold(FlowControl.CHANNEL)

    def resume(self) -> None:
        self.flow.release(FlowControl.CHANNEL)

    async def read(self, partial: bool = False, progressed: bool = True) -> bytes | None:
        """Up to about READ_MAX bytes of the input buffered, waiting for some; None at EOF,
        at stop, or when the peer timed out (logged and counted).

        Called by the connection's task only. `partial`: a message has begun and is not
        complete; `progressed`: the last input completed a message. A message must
        complete within frame-timeout of its beginning (slowloris), a connection with
        nothing begun may stay silent for idle-timeout. Waits first, up to frame-timeout,
        for the peer to read the answers it was sent.
        """
        flow = self.flow
        cfg = self.source.config
        now = asyncio.get_running_loop().time()
        if not partial:
            self.begun = None
        elif progressed or self.begun is None:
            self.begun = now
        unread = not flow.writable.is_set() and not self.stopping
        if unread and not await self._wait(flow.writable, cfg.frame_timeout):
            self._timeout(f"it left its answers unread for {cfg.frame_timeout:g}s")
            return None
        if not self.stopping:
            flow.release(FlowControl.CHANNEL)
        if self.chunks:
            # Input is waiting already: still let the other connections (and accept) run
            # once per chunk, so that one busy connection cannot hold the loop.
            await asyncio.sleep(0)
        while not self.chunks:
            if self.eof or self.stopping:
                return None
            flow.release(FlowControl.INPUT)
            self.wakeup.clear()
            if self.begun is not None:
                limit = self.begun + cfg.frame_timeout - asyncio.get_running_loop().time()
                if limit <= 0 or not await self._wait(self.wakeup, limit):
                    self._timeout(f"it left a message unfinished for {cfg.frame_timeout:g}s")
                    return None
            elif not await self._wait(self.wakeup, cfg.idle_timeout):
                self._timeout(f"it left the connection idle for {cfg.idle_timeout:g}s")
                return None
        chunks = self.chunks
        if self.buffered <= READ_MAX:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self.buffered = 0
        else:
            parts = []
            n = 0
            while chunks and n < READ_MAX:
                c = chunks.popleft()
                parts.append(c)
                n += len(c)
            data = b"".join(parts)
            self.buffered -= n
        flow.queued(self.buffered)
        return data

    async def _wait(self, event: asyncio.Event, limit: float) -> bool:
        """Wait for `event`; False when `limit` seconds (0: no limit) passed first."""
        if event.is_set():
            return True
        if limit <= 0:
            await event.wait()
            return True
        try:
            async with asyncio.timeout(limit):
                await event.wait()
        except TimeoutError:
            return event.is_set()
        return True

    def _timeout(self, reason: str) -> None:
        self.source._timed_out(self.peer_name, reason)
        self.eof = True
        if self.transport is not None:
            self.transport.abort()

    def write(self, data: bytes) -> None:
        """Send answers (dropped once the connection is closing)."""
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

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
        c.flow.hold(FlowControl.CHANNEL)
        c.wakeup.set()
        c.flow.writable.set()
    tasks = [c.task for c in conns if c.task is not None]
    if not tasks:
        return
    # One deadline for all: they finish concurrently; stragglers are cancelled.
    await asyncio.wait(tasks, timeout=grace)
    for t in tasks:
        e = await stop_task(t, 0, who="A connection")
        if e is not None:
            log.error("A connection's task failed: %r", e)


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
