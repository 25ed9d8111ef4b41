"""Source `thrift`: Flume's ThriftSource — `append` / `appendBatch` over framed Thrift.

Each call is answered only after its events are committed to the channels: `OK`, or
`FAILED` when a channel is full or the put failed, so that the sender rolls back and
retries. Calls on one connection are served in order; connections run concurrently.
The protocol (compact or binary) is recognised per connection from the first byte of
each message, and answered in kind, so compact and binary clients can share a port.

Input that is not Flume's Thrift RPC (garbage, an unframed client, a frame over
`max-frame-bytes`, a malformed message, a frame or TLS handshake left incomplete for
`frame-timeout` seconds) closes that one connection with a logged reason and counts
in EventReadFail; every other client goes on being served.

Keys as Flume's: `bind`, `port`, `protocol` (compact | binary; accepted, see above),
`ssl` with `keystore` (a PEM certificate chain; flumed's `keystore-key` for a separate
PEM key, `keystore-password` for its passphrase), `include-protocols` /
`exclude-protocols`, `threads` (accepted, no effect: one event loop serves all),
`kerberos` (only false). flumed's own: `max-frame-bytes`, `frame-timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, cast

from flumed.config.keys import ignored, key, listen_claims
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.rpc.thrift_protocol import (
    APPEND_BATCH,
    DEFAULT_MAX_FRAME,
    UNKNOWN_METHOD,
    Call,
    ProtocolError,
    Status,
    decode_call,
    encode_exception,
    encode_reply,
)
from flumed.sources.base import Source
from flumed.tls import protocol_problems, start_server_context

log = logging.getLogger("flumed.sources.thrift")

#: Stop reading a connection while this many bytes of whole frames wait to be served.
HIGH_WATER = 4 << 20
#: How long stop() lets calls in flight finish before closing their connections.
STOP_TIMEOUT = 5.0
#: TCP keepalive, so that a peer that vanished (host down, cable cut) is noticed.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6
#: Warnings about bad input: this many at once, then one a second.
LOG_BURST = 10


@dataclass(frozen=True, slots=True)
class ThriftSourceConfig:
    bind: str = key()
    port: int = key(ge=0, le=65535)
    protocol: Literal["compact", "binary"] = key(
        "compact", doc="Accepted; each connection is answered in the protocol it speaks."
    )
    ssl: bool = key(False)
    # `certificate` / `key` / `key-password` are the names the other TLS sources use.
    keystore: str | None = key(
        None, aliases=("certificate",), doc="PEM file: the certificate chain (and the key)"
    )
    keystore_key: str | None = key(
        None, name="keystore-key", aliases=("key",), doc="PEM private key file"
    )
    keystore_password: str | None = key(None, name="keystore-password", aliases=("key-password",))
    keystore_type: str = key("PEM", name="keystore-type")
    include_protocols: list[str] = key([], name="include-protocols")
    exclude_protocols: list[str] = key([], name="exclude-protocols")
    kerberos: bool = key(False)
    max_frame_bytes: int = key(DEFAULT_MAX_FRAME, name="max-frame-bytes", ge=1024)
    frame_timeout: float = key(
        60.0, name="frame-timeout", ge=0.001, doc="Seconds a begun frame may take."
    )

    IGNORED = ignored("threads", "agent-principal", "agent-keytab")

    def check(self) -> list[str]:
        problems = []
        if self.ssl and not self.keystore:
            problems.append("ssl = true needs 'keystore' (a PEM certificate chain file)")
        if self.keystore_type.upper() != "PEM":
            problems.append(
                f"keystore-type {self.keystore_type!r} is not supported: flumed reads PEM "
                "files (convert a JKS/PKCS12 keystore with keytool and openssl)"
            )
        if self.kerberos:
            problems.append("kerberos = true is not supported by flumed (SASL/GSSAPI)")
        problems += protocol_problems(self.include_protocols, self.exclude_protocols)
        return problems

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


class _Connection(asyncio.Protocol):
    """One client. The callbacks only cut frames and queue them; `ThriftSource._serve`
    (one task per connection) answers them in order.

    TLS runs here over memory BIOs rather than through asyncio's start_tls: uvloop may
    hand over bytes read before start_tls could take the transport, and asyncio does
    not report a failed handshake to the protocol; this way both loops behave alike and
    every refused handshake is a logged reason.
    """

    def __init__(self, source: ThriftSource) -> None:
        self.source = source
        self.max_frame = source.config.max_frame_bytes
        self.transport: asyncio.Transport | None = None
        self.tls: ssl.SSLObject | None = None
        if source._ssl is not None:
            self.tls_in, self.tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = source._ssl.wrap_bio(self.tls_in, self.tls_out, server_side=True)
        self.handshaken = self.tls is None
        self.buf = bytearray()
        self.frames: deque[bytes] = deque()
        self.queued = 0
        self.wakeup = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.eof = False
        self.closed = False
        self.released = False
        self.paused = False
        self.partial_since: float | None = None
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.peer = "?"

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; cast, don't check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _keepalive(sock)
        src = self.source
        src._connections.add(self)
        src.counter.OpenConnectionCount += 1
        if self.tls is not None:
            self.partial_since = time.monotonic()  # the handshake's clock
        self.task = task = asyncio.create_task(src._serve(self), name=f"thrift-{self.peer}")
        src._tasks.add(task)
        task.add_done_callback(src._task_done)

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self.tls is not None:
            data = self._decrypt(data)
            if not data:
                return
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        queued = 0
        while end - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if n == 0 or n > self.max_frame:
                self.fail(self._bad_length(n, bytes(buf[pos : pos + 4])))
                return
            if end - pos - 4 < n:
                break
            frame = bytes(buf[pos + 4 : pos + 4 + n])
            self.frames.append(frame)
            queued += n
            pos += 4 + n
        if pos:
            del buf[:pos]
        if buf:
            if self.partial_since is None or pos:
                # A frame has begun: its clock starts, and the serving task must know.
                self.partial_since = time.monotonic()
                self.wakeup.set()
        else:
            self.partial_since = None
        if queued:
            self.queued += queued
            if self.queued >= HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self.wakeup.set()

    def _decrypt(self, raw: bytes) -> bytes:
        """Feed TLS records in; return the plaintext they complete (maybe nothing)."""
        assert self.tls is not None
        self.tls_in.write(raw)
        out: list[bytes] = []
        try:
            if not self.handshaken:
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    return b""
                finally:
                    self._flush_tls()
                self.handshaken = True
                self.partial_since = None
                self.wakeup.set()
            while True:
                try:
                    chunk = self.tls.read(1 << 18)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:  # the peer's close_notify
                    self.eof_received()
                    break
                if not chunk:
                    break
                out.append(chunk)
            self._flush_tls()  # post-handshake messages (session tickets)
        except ssl.SSLError as e:
            stage = "TLS error" if self.handshaken else "TLS handshake failed"
            self.fail(f"{stage}: {e.reason or e}")
            return b""
        return b"".join(out)

    def _flush_tls(self) -> None:
        pending = self.tls_out.read()
        if pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(pending)

    def send(self, data: bytes) -> None:
        """Write one reply (encrypted on a TLS connection)."""
        if self.transport is None or self.closed or self.transport.is_closing():
            return
        if self.tls is not None:
            try:
                self.tls.write(data)
            except ssl.SSLError as e:
                self.fail(f"TLS error: {e.reason or e}")
                return
            self._flush_tls()
        else:
            self.transport.write(data)

    def _bad_length(self, n: int, head: bytes) -> str:
        if n == 0:
            return "empty frame (length 0)"
        why = f"frame of {n} bytes exceeds max-frame-bytes {self.max_frame}"
        if head[0] in (0x80, 0x82):
            return why + " (the client seems to send unframed Thrift; Flume's is framed)"
        if n > 0x7FFFFFFF or head.isascii():
            return why + f" (not Thrift framed transport? it began with {head!r})"
        return why

    def eof_received(self) -> bool:
        self.eof = True
        self.wakeup.set()
        return True  # keep the write side open for the answers still due

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.eof = True
        self.wakeup.set()
        self.writable.set()
        self.release()

    def release(self) -> None:
        """Count the connection closed, once: on connection_lost, or when its task ends
        (whichever comes first)."""
        if not self.released:
            self.released = True
            self.source.counter.OpenConnectionCount -= 1

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- for the serving task ----------------------------------------------------------
    def next_frame(self) -> bytes:
        frame = self.frames.popleft()
        self.queued -= len(frame)
        if self.paused and self.queued < HIGH_WATER // 2 and not self.closed:
            self.paused = False
            assert self.transport is not None
            self.transport.resume_reading()
            if self.partial_since is not None:
                # Reading was stopped by us, not by the peer: restart its clock.
                self.partial_since = time.monotonic()
        return frame

    def fail(self, reason: str) -> None:
        """Close the connection for `reason` (logged once by the serving task)."""
        if self.error is None:
            self.error = reason
        self.frames.clear()
        self.wakeup.set()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _keepalive(sock: Any) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    except OSError:
        pass  # keepalive is a help for dead peers, not a requirement


class ThriftSource(Source):
    Config = ThriftSourceConfig
    config: ThriftSourceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._ssl: ssl.SSLContext | None = None
        self._log_tokens = float(LOG_BURST)
        self._log_refill = time.monotonic()
        self._suppressed = 0
        self.port = config.port

    async def start(self) -> None:
        cfg = self.config
        if cfg.ssl:
            assert cfg.keystore is not None
            self._ssl = start_server_context(
                f"source {self.name}",
                cfg.keystore,
                cfg.keystore_key,
                cfg.keystore_password,
                cfg.include_protocols,
                cfg.exclude_protocols,
            )
        loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._server = await loop.create_server(
            lambda: _Connection(self), cfg.bind, cfg.port, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "Source %s listening on %s:%d (Thrift RPC, framed%s).",
            self.name,
            cfg.bind,
            self.port,
            ", TLS" if self._ssl else "",
        )
        await super().start()

    async def stop(self) -> None:
        """Stop accepting; let each call in flight finish (up to STOP_TIMEOUT), then close
        every connection. Frames received but not yet served are not answered: their
        senders will send them again."""
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        conns = list(self._connections)
        for c in conns:
            c.wakeup.set()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in pending:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        for c in conns:
            c.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await super().stop()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counter.GenericProcessingFail += 1
            log.error(
                "Source %s: serving a connection failed.", self.name, exc_info=task.exception()
            )

    # -- bad input is counted always, and logged in bursts of LOG_BURST at most, then
    # -- one line a second (a token bucket), with the count of lines held back ---------
    def _warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        self._log_tokens = min(LOG_BURST, self._log_tokens + now - self._log_refill)
        self._log_refill = now
        if self._log_tokens >= 1.0:
            self._log_tokens -= 1.0
            if self._suppressed:
                msg += " (%d similar messages suppressed)"
                args = (*args, self._suppressed)
                self._suppressed = 0
            log.warning(msg, *args)
        else:
            self._suppressed += 1

    def _drop(self, conn: _Connection, reason: str) -> None:
        self.counter.EventReadFail += 1
        self._warn("Source %s: closing connection from %s: %s.", self.name, conn.peer, reason)

    # -- serving one connection ----------------------------------------------------------
    async def _serve(self, conn: _Connection) -> None:
        """Answer the connection's calls in order until it closes, fails, or we stop."""
        timeout = self.config.frame_timeout
        try:
            while True:
                if conn.frames:
                    await self._answer(conn, conn.next_frame())
                    if not conn.writable.is_set():
                        await self._wait(conn, conn.writable, timeout, "does not read its answers")
                    continue
                if conn.closed or conn.eof or conn.error or self._stopping.is_set():
                    break
                conn.wakeup.clear()
                if conn.partial_since is not None and not conn.paused:
                    left = conn.partial_since + timeout - time.monotonic()
                    what = "a frame" if conn.handshaken else "the TLS handshake"
                    why = f"left {what} incomplete for {timeout:g}s"
                    await self._wait(conn, conn.wakeup, left, why)
                else:
                    await conn.wakeup.wait()
            if conn.error is None and conn.buf and conn.eof:
                conn.error = f"connection closed inside a frame ({len(conn.buf)} bytes)"
            if conn.error is not None:
                self._drop(conn, conn.error)
        finally:
            self._connections.discard(conn)
            conn.close()
            conn.release()

    async def _wait(self, conn: _Connection, event: asyncio.Event, left: float, why: str) -> None:
        try:
            async with asyncio.timeout(max(left, 0.0)):
                await event.wait()
        except TimeoutError:
            conn.fail(f"the peer {why} (half-open connection?)")

    async def _answer(self, conn: _Connection, frame: bytes) -> None:
        """Decode one call, commit its events, write the reply."""
        try:
            call = decode_call(frame)
        except ProtocolError as e:
            conn.fail(f"malformed Thrift message: {e}")
            return
        if call.events is None:
            self.counter.EventReadFail += 1
            self._warn("Source %s: %s called unknown method %r.", self.name, conn.peer, call.method)
            reply = encode_exception(call, UNKNOWN_METHOD, f"Invalid method name: '{call.method}'")
        else:
            reply = encode_reply(call, await self._commit(conn, call, call.events))
        conn.send(reply)

    async def _commit(self, conn: _Connection, call: Call, events: list[Event]) -> Status:
        counter = self.counter
        n = len(events)
        batch = call.method == APPEND_BATCH
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
                )
                return Status.FAILED
            except Exception:
                counter.GenericProcessingFail += 1
                log.exception(
                    "Source %s: putting %d events failed; answering FAILED.", self.name, n
                )
                return Status.FAILED
        counter.EventAcceptedCount += n
        if batch:
            counter.AppendBatchAcceptedCount += 1
        else:
            counter.AppendAcceptedCount += 1
        return Status.OK
