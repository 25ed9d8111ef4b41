"""Source `netcat`: newline-terminated lines over TCP, one event per line.

Keys as Flume's NetcatSource: `bind`, `port`, `max-line-length` (512),
`ack-every-event` (true: answer `OK` per line once it is committed to the channel),
`encoding` (accepted; bodies are the raw bytes).

Push-back: while a batch waits for room in the channel the connection stops reading,
so TCP pushes back on the sender. With ack-every-event, lines the channel refused
after keep-alive are answered `FAILED: …` (the sender resends them); without it the
batch is held and offered again until it fits: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from flumed.config.keys import ignored, key
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.sources.base import Source

log = logging.getLogger("flumed.sources.netcat")

#: Stop reading a connection once this much unprocessed input is buffered.
HIGH_WATER = 1 << 20
RETRY_BACKOFF_MAX = 1.0


@dataclass(frozen=True, slots=True)
class NetcatConfig:
    bind: str = key()
    port: int = key(ge=0, le=65535)
    max_line_length: int = key(512, name="max-line-length", ge=1)
    ack_every_event: bool = key(True, name="ack-every-event")
    encoding: str = key("utf-8")

    IGNORED = ignored()


class _Connection(asyncio.Protocol):
    """One client. `data_received` only buffers; the connection's task does the work."""

    def __init__(self, source: NetcatSource) -> None:
        self.source = source
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.wakeup = asyncio.Event()
        self.eof = False
        self.paused = False
        self.task: asyncio.Task[None] | None = None
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; cast, don't check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.source.counter.OpenConnectionCount += 1
        self.task = asyncio.create_task(self.source._serve(self), name=f"netcat-{self.peer}")
        self.source._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self.wakeup.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.wakeup.set()
        return True  # keep the write side open for the last acks

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.wakeup.set()
        self.source.counter.OpenConnectionCount -= 1

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()

    def take_input(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        self.resume()
        self.wakeup.clear()
        return data


class NetcatSource(Source):
    Config = NetcatConfig
    description = "Lines over TCP, one event per line."
    config: NetcatConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = asyncio.Event()
        self._last_warn = 0.0
        self.port = config.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.config.bind, self.config.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("Source %s listening on %s:%d.", self.name, self.config.bind, self.port)
        await super().start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        conns = list(self._connections)
        for c in conns:
            c.wakeup.set()
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await super().stop()

    def _warn(self, msg: str, *args: object) -> None:
        # Bad input is counted always and logged at most once a second per source.
        now = time.monotonic()
        if now - self._last_warn >= 1.0:
            self._last_warn = now
            log.warning(msg, *args)

    async def _serve(self, conn: _Connection) -> None:
        """Split input into lines, commit them in batches, answer, push back."""
        # As Flume's, max-line-length counts the newline.
        maxlen = self.config.max_line_length - 1
        ack = self.config.ack_every_event
        counter = self.counter
        rest = b""
        discarding = False  # inside an oversized line, up to its newline
        try:
            while True:
                if not conn.chunks:
                    if conn.eof or self._stopping.is_set():
                        break
                    conn.resume()
                    await conn.wakeup.wait()
                    continue
                data = conn.take_input()
                if rest:
                    data = rest + data
                lines = data.split(b"\n")
                rest = lines.pop()
                errors = 0
                if discarding and lines:
                    lines.pop(0)
                    discarding = False
                if lines and max(map(len, lines)) > maxlen:
                    kept = [ln for ln in lines if len(ln) <= maxlen]
                    errors = len(lines) - len(kept)
                    lines = kept
                if len(rest) > maxlen:
                    rest = b""
                    if not discarding:
                        errors += 1
                    discarding = True
                if errors:
                    counter.EventReadFail += errors
                    self._warn(
                        "Source %s: %d line(s) from %s exceed max-line-length %d and were "
                        "rejected.",
                        self.name,
                        errors,
                        conn.peer,
                        self.config.max_line_length,
                    )
                    if ack and conn.transport is not None:
                        conn.transport.write(
                            b"FAILED: Event exceeds the maximum length (%d chars, including "
                            b"newline)\n" % self.config.max_line_length * errors
                        )
                if lines:
                    await self._commit(conn, lines, ack)
            if rest and not discarding:
                await self._commit(conn, [rest], ack)
        finally:
            self._connections.discard(conn)
            if conn.transport is not None:
                conn.transport.close()

    async def _commit(self, conn: _Connection, lines: list[bytes], ack: bool) -> None:
        counter = self.counter
        counter.EventReceivedCount += len(lines)
        events = [Event(ln) for ln in lines]
        delay = 0.1
        while True:
            try:
                await self.processor.process_batch(events)
            except ChannelError as e:
                counter.ChannelWriteFail += 1
                accepted = e.accepted if isinstance(e, ChannelFullError) else 0
                counter.EventAcceptedCount += accepted
                if ack:
                    refused = len(events) - accepted
                    msg = f"FAILED: {e}".replace("\n", " ").encode() + b"\n"
                    if conn.transport is not None:
                        conn.transport.write(b"OK\n" * accepted + msg * refused)
                    self._warn("Source %s: channel refused %d events: %s", self.name, refused, e)
                    return
                # No way to tell the sender: hold the rest and offer it again, while
                # the connection reads nothing more (TCP pushes back).
                events = events[accepted:]
                self._warn(
                    "Source %s: channel full, holding %d events: %s", self.name, len(events), e
                )
                if conn.transport is not None and not conn.paused:
                    conn.paused = True
                    conn.transport.pause_reading()
                if accepted:
                    # The put already waited keep-alive; progress means room is coming.
                    delay = 0.1
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    log.error(
                        "Source %s: stopping with %d events from %s not accepted by the "
                        "channel; the sender was not acknowledged for them.",
                        self.name,
                        len(events),
                        conn.peer,
                    )
                    return
                delay = min(delay * 2, RETRY_BACKOFF_MAX)
                continue
            counter.EventAcceptedCount += len(events)
            if ack and conn.transport is not None:
                conn.transport.write(b"OK\n" * len(events))
            return
