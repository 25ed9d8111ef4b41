"""The base of the RPC server sources (`avro`, `thrift`): one connection protocol, one
serving loop, one commit.

`RpcConnection` is one client: bytes → layers (zlib and TLS, flumed.rpc.stream) → the
source's framer → a queue of requests; the connection's own task
(`RpcServerSource._serve`) answers them in order. Decoding through the layers is lazy:
once HIGH_WATER bytes of requests wait, the rest of the input stays as it came (still
compressed) and reading is paused, so a deflate bomb inflates no further than
HIGH_WATER plus one frame (a frame is refused from its length, before its payload is
inflated). What one connection can pin: HIGH_WATER of queued requests, one frame being
assembled (`max-frame-bytes`), the request being decoded, and HIGH_WATER of unread answers.

`RpcServerSource` holds start/stop (stop_task, one deadline), the timeouts
(`frame-timeout` for a begun frame or TLS handshake and unread answers, `idle-timeout`),
the connection cap and accept errors (flumed.sources.server), the optional IP filter,
the rate-limited warnings, and the commit with Flume's Append*/AppendBatch* counters.
A subclass gives the framer (`_framer`), the layers (`_layers`) and `_respond`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol, cast

from flumed.errors import ChannelError
from flumed.event import Event
from flumed.lifecycle import stop_task
from flumed.rpc.ipfilter import IpFilter
from flumed.rpc.stream import Layer, LayerStack, StreamError
from flumed.sources.server import HIGH_WATER, FlowControl, ListeningSource

log = logging.getLogger("flumed.sources")

#: How long stop() lets requests in flight finish before closing their connections.
STOP_TIMEOUT = 5.0
#: A request larger than this is decoded in a worker thread: the event loop keeps its
#: turn (the GIL passes every few milliseconds), so one large legal request does not
#: stall every other connection and component while it is decoded.
DECODE_OFF_LOOP = 1 << 20
#: Requests a connection's task serves before it lets the other tasks run.
YIELD_EVERY = 32
#: TCP keepalive, so that a peer that vanished (host down, cable cut) is noticed.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6


class Framer(Protocol):
    """Cuts decoded bytes into requests: (serial, payload) pairs."""

    @property
    def partial(self) -> bool: ...

    def feed(self, data: bytes) -> list[tuple[int, bytes]]: ...


def tune_socket(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY and keepalive (dead peers are noticed); failures are harmless."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    except OSError:
        pass


class RpcConnection(asyncio.Protocol):
    """One client of an RPC server source (see the module doc). The callbacks only
    decode and queue; the serving task answers."""

    def __init__(self, source: RpcServerSource) -> None:
        self.source = source
        self.framer = source._framer()
        self.bad_input = source.bad_input
        layers = source._layers()
        self.stack: LayerStack | None = LayerStack(layers, self._write) if layers else None
        self.transport: asyncio.Transport | None = None
        self.flow = FlowControl()
        self.queue: deque[tuple[int, bytes]] = deque()
        self.queued = 0
        self.wakeup = asyncio.Event()
        self.eof = False
        self.closed = False
        self.released = True
        self.error: str | None = None
        self.timed_out = False
        self.partial_since: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.peer = "?"
        self.local_ip: str | None = None
        #: False: refused by the IP filter; None: to be decided by the serving task.
        self.admitted: bool | None = True
        #: The protocol's own per-connection state (the Avro handshake).
        self.established = False
        self._pending: Iterator[bytes] | None = None  # decoded input not yet framed
        self._backlog: list[bytes] = []

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't check.
        self.transport = t = cast(asyncio.Transport, transport)
        self.flow.attach(t)
        peer = t.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = t.get_extra_info("sockname")
        self.local_ip = sock[0] if sock else None
        tune_socket(t)
        src = self.source
        src._connections.add(self)
        src.counter.OpenConnectionCount += 1
        self.released = False
        self.admitted = src._admit_now(self, peer[0] if peer else None)
        if self.admitted is False:
            self.closed = True
            t.abort()
            return
        if self.stack is not None:
            try:
                self.stack.start()
            except StreamError as e:
                self.fail(str(e))
        self._update_partial(False)
        self.task = task = asyncio.create_task(src._serve(self), name=f"{src.name}-{self.peer}")
        task.add_done_callback(src._served)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.error is not None:
            return
        if self._pending is not None:
            self._backlog.append(data)  # reading is paused; this was already in flight
            return
        progress = False
        try:
            if self.stack is None:
                progress = self._frame(data)
            else:
                self._pending = self.stack.from_wire(data)
                progress = self._pump()
        except self.bad_input as e:
            self._pending = None
            self.fail(str(e))
            return
        self._update_partial(progress)

    def _frame(self, data: bytes) -> bool:
        reqs = self.framer.feed(data)
        if not reqs:
            return False
        self.queue.extend(reqs)
        self.queued += sum(len(p) for _, p in reqs)
        if self.queued >= HIGH_WATER:
            self.flow.hold(FlowControl.INPUT)
        self.wakeup.set()
        return True

    def _pump(self) -> bool:
        """Frame decoded input until it is used up or HIGH_WATER bytes of requests wait;
        then the rest stays undecoded (reading paused) until the queue drains. Raises
        what the layers and the framer raise."""
        progress = False
        assert self.stack is not None
        while self._pending is not None:
            for piece in self._pending:
                progress |= self._frame(piece)
                if self.queued >= HIGH_WATER:
                    return progress  # the rest waits undecoded; reading stays paused
            self._pending = None
            if self._backlog:
                data = b"".join(self._backlog)
                self._backlog.clear()
                self._pending = self.stack.from_wire(data)
        self.flow.queued(self.queued)
        return progress

    def _update_partial(self, progress: bool) -> None:
        """Start the frame-timeout clock when a frame (or the TLS handshake) has begun;
        restart it when requests were completed; stop it when nothing is begun."""
        begun = self.framer.partial or not self.ready or self._pending is not None
        if not begun:
            self.partial_since = None
        elif self.partial_since is None or progress:
            self.partial_since = time.monotonic()
            self.wakeup.set()  # the serving task must arm the clock

    @property
    def ready(self) -> bool:
        """True once every layer carries application bytes (the TLS handshake is done)."""
        return self.stack is None or self.stack.ready

    def eof_received(self) -> bool:
        self.eof = True
        self.wakeup.set()
        return True  # keep the write side open for the answers still due

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.eof = True
        self.wakeup.set()
        self.flow.writable.set()
        self.release()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- for the serving task ----------------------------------------------------------
    def next_request(self) -> tuple[int, bytes]:
        serial, payload = self.queue.popleft()
        self.queued -= len(payload)
        if self._pending is not None:
            if self.queued < HIGH_WATER // 2 and not self.closed:
                try:
                    progress = self._pump()
                except self.bad_input as e:
                    self._pending = None
                    self.fail(str(e))
                    return serial, payload
                self._update_partial(progress)
        elif self.flow.holds & FlowControl.INPUT:
            self.flow.queued(self.queued)
            if not self.flow.paused and self.partial_since is not None:
                # Reading was stopped by us, not by the peer: restart its clock.
                self.partial_since = time.monotonic()
        return serial, payload

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def send(self, data: bytes) -> None:
        """Write application bytes (through the layers). A failure closes the connection."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        if self.stack is None:
            self.transport.write(data)
            return
        try:
            out = self.stack.to_wire(data)
        except StreamError as e:
            self.fail(str(e))
            return
        if out:
            self.transport.write(out)

    def fail(self, reason: str, abort: bool = True) -> None:
        """Close the connection for `reason` (logged once by the serving task). `abort`
        drops what is still buffered for the peer; otherwise it is flushed first."""
        if self.error is None:
            self.error = reason
        self.queue.clear()
        self.wakeup.set()
        self.close(abort)

    def close(self, abort: bool = False) -> None:
        self.closed = True
        t = self.transport
        if t is not None and not t.is_closing():
            if abort:
                t.abort()
            else:
                t.close()
        self.flow.writable.set()

    def release(self) -> None:
        """Count the connection closed, once (connection_lost or the task's end)."""
        if not self.released:
            self.released = True
            self.source.counter.OpenConnectionCount -= 1
        self.source._connections.discard(self)


class RpcServerSource(ListeningSource):
    """Base of the RPC server sources (see the module doc).

    Subclasses set `bad_input` (the exceptions their framer and layers raise for bad
    input), implement `_framer()`, `_respond()`, and may override `_layers()` and
    `_describe()` (the start log line's details).
    """

    bad_input: tuple[type[Exception], ...] = (StreamError,)
    protocol_name = "RPC"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._filter: IpFilter | None = None
        self._ssl: Any = None

    # -- for subclasses ------------------------------------------------------------------
    def _framer(self) -> Framer:
        raise NotImplementedError

    def _layers(self) -> list[Layer]:
        return []

    def _describe(self) -> str:
        return ""

    async def _respond(
        self, conn: RpcConnection, serial: int, payload: bytes
    ) -> tuple[bytes, str | None]:
        """The answer to one request (application bytes, sent as they are), and why the
        connection must close after it (None: it goes on)."""
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        await self._listen(cfg.bind, [cfg.port], lambda: RpcConnection(self))
        self.log.info(
            "Source %s listening on %s:%d (%s%s).",
            self.name,
            cfg.bind,
            self.port,
            self.protocol_name,
            self._describe(),
        )
        await super().start()

    async def stop(self) -> None:
        """Stop accepting; let each request in flight finish (up to STOP_TIMEOUT), then
        close every connection. Requests received but not yet served are not answered:
        their senders send them again (committing them now would only make duplicates)."""
        self._stopping.set()
        await self._close_listeners()
        conns = list(self._connections)
        for c in conns:
            c.wakeup.set()
            c.flow.writable.set()
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in tasks:
                await stop_task(t, 0, who=f"Source {self.name}: a connection")
        for c in conns:
            c.close()
            c.release()
        await super().stop()

    # -- admission -------------------------------------------------------------------------
    def _admit_now(self, conn: RpcConnection, ip: str | None) -> bool | None:
        """The IP filter's answer when it needs no name lookup (None: ask later)."""
        if self._filter is None:
            return True
        if ip is None:
            return False
        verdict = self._filter.decide_now(ip, conn.local_ip)
        if verdict is False:
            self._refuse(ip)
        return verdict

    def _refuse(self, ip: str) -> None:
        self.counter.ConnectionRefusedCount += 1
        self._warn(
            "Source %s: connection from %s refused by ipFilterRules.", self.name, ip, kind="refused"
        )

    # -- serving a connection --------------------------------------------------------------
    def _served(self, task: asyncio.Task[None]) -> None:
        """Done callback of every connection task: a crash is a bug, logged, not lost."""
        if not task.cancelled() and task.exception() is not None:
            self.counter.GenericProcessingFail += 1
            self.log.error(
                "Source %s: serving a connection failed.", self.name, exc_info=task.exception()
            )

    async def _serve(self, conn: RpcConnection) -> None:
        """Answer the connection's requests in order until it closes, fails, or we stop."""
        try:
            if conn.admitted is None:
                assert self._filter is not None
                ip = conn.peer.rsplit(":", 1)[0]
                if not await self._filter.decide(ip, conn.local_ip):
                    self._refuse(ip)
                    conn.close(abort=True)
                    return
            cfg = self.config
            timeout = cfg.frame_timeout
            served = 0
            while True:
                if conn.closed or self._stopping.is_set():
                    break
                if conn.queue:
                    served += 1
                    if not served % YIELD_EVERY:
                        # A commit that never has to wait does not suspend: without this,
                        # a client pipelining small calls would hold the loop for 1 MiB of
                        # them, and every other connection (and accept) would wait.
                        await asyncio.sleep(0)
                    serial, payload = conn.next_request()
                    response, bad = await self._respond(conn, serial, payload)
                    conn.send(response)
                    if bad is not None:
                        conn.fail(bad, abort=False)  # after the error answer is flushed
                        break
                    if not conn.flow.writable.is_set():
                        why = f"left its answers unread for {timeout:g}s"
                        await self._wait(conn, conn.flow.writable, timeout, why)
                    continue
                if conn.eof or conn.error is not None:
                    break
                conn.wakeup.clear()
                if conn.partial_since is not None and not conn.flow.paused:
                    left = conn.partial_since + timeout - time.monotonic()
                    what = "the TLS handshake" if not conn.ready else "a frame"
                    await self._wait(
                        conn, conn.wakeup, left, f"left {what} incomplete for {timeout:g}s"
                    )
                elif cfg.idle_timeout > 0 and not conn.flow.paused:
                    why = f"sent nothing for {cfg.idle_timeout:g}s"
                    await self._wait(conn, conn.wakeup, cfg.idle_timeout, why, idle=True)
                else:
                    await conn.wakeup.wait()
            if conn.error is None and conn.eof and conn.framer.partial:
                conn.error = "connection closed inside a frame"
            if conn.timed_out and conn.error is not None:
                self._timed_out(conn.peer, conn.error)
            elif conn.error is not None:
                self._drop(conn.peer, conn.error)
        finally:
            conn.close()
            conn.release()

    async def _wait(
        self, conn: RpcConnection, event: asyncio.Event, left: float, why: str, idle: bool = False
    ) -> None:
        """Wait for `event` up to `left` seconds, else close the connection for `why`. A
        begun frame or unread answers past the timeout count as bad input (EventReadFail)
        as well as a timeout; an idle connection only as a timeout."""
        try:
            async with asyncio.timeout(max(left, 0.0)):
                await event.wait()
        except TimeoutError:
            if event.is_set():
                return
            conn.fail(f"the peer {why}" + ("" if idle else " (half-open connection?)"))
            conn.timed_out = True
            if not idle:
                self.counter.EventReadFail += 1  # a begun frame left hanging is bad input

    async def _commit(self, conn: RpcConnection, events: list[Event], batch: bool) -> bool:
        """Put `events` into the channels; True when committed (answer OK), False when
        refused (answer FAILED: the sender resends). Counts Flume's source counters."""
        counter = self.counter
        n = len(events)
        counter.EventReceivedCount += n
        if batch:
            counter.AppendBatchReceivedCount += 1
        else:
            counter.AppendReceivedCount += 1
        if n:
            try:
                await self.processor.process_batch(events)
            except ChannelError as e:
                counter.ChannelWriteFail += 1
                self._warn(
                    "Source %s: channel refused %d events from %s, answering FAILED: %s",
                    self.name,
                    n,
                    conn.peer,
                    e,
                    kind="channel",
                )
                return False
            except Exception:
                counter.GenericProcessingFail += 1
                self.log.exception(
                    "Source %s: putting %d events failed; answering FAILED.", self.name, n
                )
                return False
        counter.EventAcceptedCount += n
        if batch:
            counter.AppendBatchAcceptedCount += 1
        else:
            counter.AppendAcceptedCount += 1
        return True
