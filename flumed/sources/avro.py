"""Source `avro`: Flume's AvroSource — Avro RPC (`append`, `appendBatch`) over Netty framing.

Each request is answered only after its events are committed to the channels: `OK`,
or `FAILED` when a channel is full or the put failed, so that the sender rolls back
and retries. Requests on one connection are served in order; connections run
concurrently. Input that is not Avro RPC (garbage, a bad handshake, an oversized or
stalled frame) closes that connection with a logged reason; other clients go on.

Keys as Flume's: `bind`, `port`, `compression-type` (none | deflate), `ssl`,
`include-protocols`/`exclude-protocols`, `ipFilter` with `ipFilterRules`, `threads`
(accepted, without effect, as in Flume 1.10+). Where Flume reads a Java keystore,
flumed reads PEM files, with the keys of its other TLS sources: `certificate`, `key`,
`key-password`; a `keystore` is refused with a message saying how to convert it.
flumed's own: `max-frame-bytes`, `max-batch-events`, `frame-timeout`,
`compression-layer` (see docs/avro.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, cast

from flumed.config.keys import ignored, key, listen_claims
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.rpc.avro_protocol import (
    DEFAULT_MAX_PACK,
    HandshakeRequest,
    LimitExceeded,
    Match,
    ProtocolError,
    Reader,
    ServerHandshake,
    Status,
    encode_error_response,
    encode_status_response,
)
from flumed.rpc.avro_transport import PackConnection
from flumed.rpc.ipfilter import IpFilter, parse_rules
from flumed.rpc.stream import Layer, build_layers
from flumed.sources.base import Source
from flumed.tls import check_tls, start_server_context

log = logging.getLogger("flumed.sources.avro")

#: Most events one appendBatch may carry (Flume has no limit; AvroSink sends batch-size).
DEFAULT_MAX_EVENTS = 100_000
#: Stop reading a connection while this many request bytes wait to be served.
HIGH_WATER = 4 << 20
#: How long stop() lets requests in flight finish before closing their connections.
STOP_TIMEOUT = 5.0
_OK = encode_status_response(Status.OK)
_FAILED = encode_status_response(Status.FAILED)


@dataclass(frozen=True, slots=True)
class AvroSourceConfig:
    bind: str = key()
    port: int = key(ge=0, le=65535)
    compression_type: Literal["none", "deflate"] = key("none", name="compression-type")
    ssl: bool = key(False)
    certificate: str | None = key(None, doc="PEM certificate (chain) file, with ssl.")
    key_file: str | None = key(None, name="key", doc="PEM private key file, with ssl.")
    key_password: str | None = key(None, name="key-password")
    keystore: str | None = key(None, doc="Refused: Java keystores are not read.")
    include_protocols: list[str] = key([], name="include-protocols")
    exclude_protocols: list[str] = key(["SSLv3"], name="exclude-protocols")
    ipFilter: bool = key(False)
    ipFilterRules: str | None = key(None)
    max_frame_bytes: int = key(DEFAULT_MAX_PACK, name="max-frame-bytes", ge=1024)
    max_batch_events: int = key(DEFAULT_MAX_EVENTS, name="max-batch-events", ge=1)
    frame_timeout: float = key(60.0, name="frame-timeout", ge=0.001)
    compression_layer: Literal["outside-ssl", "inside-ssl"] = key(
        "outside-ssl", name="compression-layer"
    )

    IGNORED = ignored(
        "threads",
        "keystore-password",
        "keystore-type",
        "exclude-cipher-suites",
        "include-cipher-suites",
    )

    def check(self) -> list[str]:
        problems = check_tls(
            self.ssl,
            self.certificate,
            self.keystore,
            self.include_protocols,
            self.exclude_protocols,
        )
        if self.ipFilter:
            if not self.ipFilterRules:
                problems.append("ipFilter = true needs 'ipFilterRules'")
            else:
                try:
                    parse_rules(self.ipFilterRules)
                except ValueError as e:
                    problems.append(f"key 'ipFilterRules': {e}")
        return problems

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


class _Connection(PackConnection):
    """One client. `data_received` only queues packs; the connection's task serves them."""

    def __init__(self, source: AvroSource) -> None:
        super().__init__(source._layers, source.config.max_frame_bytes)
        self.source = source
        self.queue: deque[tuple[int, bytes]] = deque()
        self.queued = 0
        self.wakeup = asyncio.Event()
        self.eof = False
        self.paused = False
        self.established = False
        self.partial_since: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.local_ip: str | None = None
        self.admitted: bool | None = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        src = self.source
        src._connections.add(self)
        src.counter.OpenConnectionCount += 1
        sock = transport.get_extra_info("sockname")
        self.local_ip = sock[0] if sock else None
        if src._filter is not None:
            peer = transport.get_extra_info("peername")
            self.admitted = src._filter.decide_now(peer[0], self.local_ip) if peer else False
            if self.admitted is False:
                src._refuse(peer[0] if peer else "?")
                self.closed = True
                cast(asyncio.Transport, transport).abort()
                return
        super().connection_made(transport)
        if not self.ready:
            self.partial_since = time.monotonic()
        self.task = asyncio.create_task(src._serve(self), name=f"avro-{self.peer}")
        self.task.add_done_callback(src._served)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.decoder.partial or not self.ready:
            if self.partial_since is None:
                self.partial_since = time.monotonic()
        else:
            self.partial_since = None
        self.wakeup.set()

    def packs_received(self, packs: list[tuple[int, bytes]]) -> None:
        self.queue.extend(packs)
        self.queued += sum(len(p) for _, p in packs)
        if self.queued >= HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self.wakeup.set()
        return True  # keep the write side open for the answers still due

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.eof = True
        self.wakeup.set()
        self.source.counter.OpenConnectionCount -= 1
        if self.task is None:
            self.source._connections.discard(self)

    def fail(self, reason: str, abort: bool = True) -> None:
        super().fail(reason, abort)
        self.wakeup.set()

    def next_request(self) -> tuple[int, bytes]:
        serial, payload = self.queue.popleft()
        self.queued -= len(payload)
        if self.paused and self.queued < HIGH_WATER // 2 and not self.closed:
            self.paused = False
            assert self.transport is not None
            self.transport.resume_reading()
            if self.partial_since is not None:
                # Reading was stopped by us, not by the peer: restart its clock.
                self.partial_since = time.monotonic()
        return serial, payload


class AvroSource(Source):
    Config = AvroSourceConfig
    config: AvroSourceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = asyncio.Event()
        self._handshake = ServerHandshake()
        self._ssl: ssl.SSLContext | None = None
        self._filter = IpFilter(parse_rules(config.ipFilterRules)) if config.ipFilter else None
        self._last_warn = 0.0
        self._suppressed = 0
        self.port = config.port

    def _layers(self) -> list[Layer]:
        cfg = self.config
        return build_layers(
            deflate_level=6 if cfg.compression_type == "deflate" else None,
            ssl_context=self._ssl,
            server_side=True,
            order=cfg.compression_layer,
        )

    async def start(self) -> None:
        cfg = self.config
        if cfg.ssl:
            assert cfg.certificate is not None
            self._ssl = start_server_context(
                f"source {self.name}",
                cfg.certificate,
                cfg.key_file,
                cfg.key_password,
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
            "Source %s listening on %s:%d (Avro RPC%s%s).",
            self.name,
            cfg.bind,
            self.port,
            ", TLS" if cfg.ssl else "",
            ", deflate" if cfg.compression_type == "deflate" else "",
        )
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

    # -- logging bad input, at most once a second ------------------------------------------
    def _warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warn >= 1.0:
            if self._suppressed:
                msg += " (%d similar messages suppressed)"
                args = (*args, self._suppressed)
            self._last_warn = now
            self._suppressed = 0
            log.warning(msg, *args)
        else:
            self._suppressed += 1

    def _refuse(self, ip: str) -> None:
        self._warn("Source %s: connection from %s refused by ipFilterRules.", self.name, ip)

    def _drop(self, conn: _Connection, reason: str) -> None:
        self.counter.EventReadFail += 1
        self._warn("Source %s: closing connection from %s: %s.", self.name, conn.peer, reason)

    # -- serving a connection --------------------------------------------------------------
    def _served(self, task: asyncio.Task[None]) -> None:
        """Done callback of every connection task: a crash is a bug, logged, not lost."""
        if not task.cancelled() and task.exception() is not None:
            self.counter.GenericProcessingFail += 1
            log.error(
                "Source %s: serving a connection failed.", self.name, exc_info=task.exception()
            )

    async def _serve(self, conn: _Connection) -> None:
        """Answer the connection's requests in order until it closes or we stop."""
        try:
            if conn.admitted is None:
                assert self._filter is not None
                ip = conn.peer.rsplit(":", 1)[0]
                if not await self._filter.decide(ip, conn.local_ip):
                    self._refuse(ip)
                    conn.close(abort=True)
                    return
            timeout = self.config.frame_timeout
            while True:
                if conn.closed or self._stopping.is_set():
                    # Requests still queued are not answered: the client sends them
                    # again. Committing them now would only make duplicates.
                    break
                if conn.queue:
                    serial, payload = conn.next_request()
                    response, bad = await self._respond(conn, payload)
                    conn.send_pack(serial, response)
                    if bad is not None:
                        conn.fail(bad, abort=False)  # after the error answer is flushed
                        break
                    if not conn.writable.is_set():
                        await self._wait(conn, conn.writable, timeout, "does not read its answers")
                    continue
                if conn.eof:
                    break
                conn.wakeup.clear()
                if conn.partial_since is not None:
                    left = conn.partial_since + timeout - time.monotonic()
                    what = "its TLS handshake" if not conn.ready else "a request"
                    why = f"left {what} unfinished for {timeout:g}s"
                    await self._wait(conn, conn.wakeup, left, why)
                else:
                    await conn.wakeup.wait()
            if conn.error is not None:
                self._drop(conn, conn.error)
        finally:
            self._connections.discard(conn)
            conn.close()

    async def _wait(self, conn: _Connection, event: asyncio.Event, left: float, why: str) -> None:
        try:
            async with asyncio.timeout(max(left, 0.0)):
                await event.wait()
        except TimeoutError:
            conn.fail(f"the peer {why} (half-open connection?)")

    async def _respond(self, conn: _Connection, payload: bytes) -> tuple[bytes, str | None]:
        """The response to one request, and why the connection must close when the
        request was malformed (the error response is sent first)."""
        r = Reader(payload)
        handshake = b""
        try:
            if not conn.established:
                resp = self._handshake.respond(HandshakeRequest.read(r))
                handshake = resp.encode()
                if resp.match is Match.NONE:
                    return handshake, None  # the client resends with its protocol
                conn.established = True
            r.read_map_bytes()
            message = r.read_string()
            if message == "appendBatch":
                events = r.read_events(self.config.max_batch_events)
                batch = True
            elif message == "append":
                events = [r.read_event()]
                batch = False
            elif message == "":
                return handshake, None  # a handshake ping
            else:
                self.counter.EventReadFail += 1
                self._warn(
                    "Source %s: %s called unknown message %r.", self.name, conn.peer, message
                )
                return encode_error_response(f"No message named {message!r}", handshake), None
        except LimitExceeded as e:
            # Well-formed but too large: refused with an error, the connection goes on.
            self.counter.EventReadFail += 1
            self._warn("Source %s: refused a request from %s: %s.", self.name, conn.peer, e)
            return encode_error_response(str(e), handshake), None
        except ProtocolError as e:
            return encode_error_response(
                f"malformed request: {e}", handshake
            ), f"malformed request: {e}"
        return handshake + await self._commit(conn, events, batch), None

    async def _commit(self, conn: _Connection, events: list[Event], batch: bool) -> bytes:
        counter = self.counter
        n = len(events)
        counter.EventReceivedCount += n
        if batch:
            counter.AppendBatchReceivedCount += 1
        else:
            counter.AppendReceivedCount += 1
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
            return _FAILED
        except Exception:
            counter.GenericProcessingFail += 1
            log.exception("Source %s: putting %d events failed; answering FAILED.", self.name, n)
            return _FAILED
        counter.EventAcceptedCount += n
        if batch:
            counter.AppendBatchAcceptedCount += 1
        else:
            counter.AppendAcceptedCount += 1
        return _OK
