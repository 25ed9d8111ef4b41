"""Source `syslogtcp`: syslog over TCP (RFC 6587 framing), optionally TLS (RFC 5425).

Keys as Flume's SyslogTcpSource: `host` (all interfaces), `port`, `eventSize` (2500
bytes, at least 10), `keepFields` (`none`), `clientIPHeader`, `clientHostnameHeader`,
and TLS: `ssl`, `certificate`, `key`, `key-password`, `exclude-protocols`,
`include-protocols` (see flumed.tls). Flume's `format.*` custom Java regex formats are
refused with an error.

Each connection is read in chunks; a chunk is framed (newline or octet counting,
detected from the first byte), parsed as one batch (flumed.sources.syslog_parser) and
committed to the channels in one call. Push-back: while a batch waits for room in the
channel, the connection reads nothing more (past 1 MiB buffered it stops reading the
socket), so TCP pushes back on the sender; a batch the channel refuses is held and
offered again, never dropped. Invalid messages become events with the
`flume.syslog.status` header and are counted in EventReadFail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from flumed.config.keys import ignored, key, prefix
from flumed.errors import ChannelError, ChannelFullError, ComponentStartError
from flumed.event import Event
from flumed.sources.base import Source
from flumed.sources.syslog_parser import INCOMPLETE, STATUS, SyslogFramer, SyslogParser
from flumed.tls import check_tls, server_context

log = logging.getLogger("flumed.sources.syslog")

#: Stop reading a connection once this much unprocessed input is buffered.
HIGH_WATER = 1 << 20
#: Longest wait between offers of a batch the channel refused.
RETRY_BACKOFF_MAX = 1.0
#: How long `stop()` keeps offering held batches (the sinks still drain meanwhile).
STOP_GRACE = 5.0

TLS_IGNORED = ignored(
    "keystore-password", "keystore-type", "exclude-cipher-suites", "include-cipher-suites"
)


@dataclass(frozen=True, slots=True)
class SyslogTcpConfig:
    port: int = key(ge=0, le=65535)
    host: str = key("0.0.0.0", doc="Address to bind (Flume: all interfaces).")
    eventSize: int = key(2500, ge=10, doc="Longest message in bytes; longer ones are cut.")
    keepFields: str = key("none", doc="none | all | some of: priority version timestamp hostname")
    clientIPHeader: str | None = key(None, doc="Header for the sender's IP address.")
    clientHostnameHeader: str | None = key(None, doc="Header for the sender's host name.")
    ssl: bool = key(False)
    certificate: str | None = key(None, doc="PEM certificate (chain) file, with ssl.")
    key_file: str | None = key(None, name="key", doc="PEM private key file, with ssl.")
    key_password: str | None = key(None, name="key-password")
    keystore: str | None = key(None, doc="Refused: Java keystores are not read.")
    exclude_protocols: list[str] = key(["SSLv3"], name="exclude-protocols")
    include_protocols: list[str] = key([], name="include-protocols")
    format: dict[str, Any] = prefix("format", doc="Refused: Flume's custom formats.")

    IGNORED = TLS_IGNORED

    def check(self) -> list[str]:
        return check_tcp_keys(self)


def check_tcp_keys(cfg: Any) -> list[str]:
    problems = check_tls(
        cfg.ssl, cfg.certificate, cfg.keystore, cfg.include_protocols, cfg.exclude_protocols
    )
    if cfg.format:
        problems.append(
            "keys 'format.*' (custom Java regex formats) are not supported by flumed; "
            "RFC 3164 and RFC 5424 are parsed built in"
        )
    return problems


class RateLimitedLog:
    """Log a warning at most once per `interval` seconds, counting what was held back."""

    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = 0.0
        self._held = 0

    def warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        if self._held:
            msg += " (%d similar warnings held back)"
            args = (*args, self._held)
        self._last = now
        self._held = 0
        self.logger.warning(msg, *args)


class TcpConnection(asyncio.Protocol):
    """One client. `data_received` only buffers; the connection's task does the work."""

    def __init__(self, source: SyslogTcpSource) -> None:
        self.source = source
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.wakeup = asyncio.Event()
        self.eof = False
        self.paused = False
        self.task: asyncio.Task[None] | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local_port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
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
            self.source._serve(self), name=f"{self.source.name}-{self.peer[0]}:{self.peer[1]}"
        )

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= HIGH_WATER:
            self.pause()
        self.wakeup.set()

    def eof_received(self) -> bool | None:
        self.eof = True
        self.wakeup.set()
        return None

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

    def take_input(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        self.wakeup.clear()
        return data


class SyslogTcpSource(Source):
    """Syslog over TCP, one task per connection, batches of what each read brought."""

    Config = SyslogTcpConfig
    description = "Syslog (RFC 3164/5424) over TCP, newline or octet-counted, optional TLS."
    config: Any

    #: Parser rules: Flume's SyslogUtils (syslogtcp/syslogudp) or SyslogParser (multiport).
    flavor = "syslogtcp"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[TcpConnection] = set()
        self._stopping = asyncio.Event()
        self._warn = RateLimitedLog(log)
        self._bad_log = RateLimitedLog(log)
        self.parser = SyslogParser(
            config.keepFields, flavor=self.flavor, utc3164=self.flavor == "multiport"
        )
        #: The ports actually bound (port 0 asks the kernel for one).
        self.ports: list[int] = []

    @property
    def port(self) -> int:
        return self.ports[0] if self.ports else 0

    def _listen_ports(self) -> list[int]:
        return [self.config.port]

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not cfg.ssl:
            return None
        try:
            return server_context(
                cfg.certificate,
                cfg.key_file,
                cfg.key_password,
                cfg.include_protocols,
                cfg.exclude_protocols,
            )
        except (OSError, ssl.SSLError) as e:
            raise ComponentStartError(
                f"Source {self.name}: cannot load TLS certificate {cfg.certificate!r} / key "
                f"{cfg.key_file!r}: {e}"
            ) from e

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping.clear()
        ctx = self._ssl_context()
        try:
            for port in self._listen_ports():
                server = await loop.create_server(
                    lambda: TcpConnection(self),
                    self.config.host,
                    port,
                    ssl=ctx,
                    reuse_address=True,
                    backlog=1024,
                )
                self._servers.append(server)
                self.ports.append(server.sockets[0].getsockname()[1])
        except BaseException:
            await self._close_servers()
            raise
        log.info(
            "Source %s listening on %s port(s) %s%s.",
            self.name,
            self.config.host,
            " ".join(map(str, self.ports)),
            " (TLS)" if ctx else "",
        )
        await super().start()

    async def _close_servers(self) -> None:
        for s in self._servers:
            s.close()
        for s in self._servers:
            await s.wait_closed()
        self._servers.clear()

    async def stop(self) -> None:
        self._stopping.set()
        for s in self._servers:
            s.close()
        conns = list(self._connections)
        for c in conns:
            # Read nothing more; what was received is still framed and committed.
            c.pause()
            c.wakeup.set()
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE + 1)
            for t in pending:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await self._close_servers()
        self.ports = []
        await super().stop()

    # -- per connection ----------------------------------------------------------------
    async def _conn_headers(self, conn: TcpConnection) -> dict[str, str]:
        """Headers every event of this connection carries (client IP / host name)."""
        cfg = self.config
        out: dict[str, str] = {}
        ip, port = conn.peer
        if cfg.clientIPHeader:
            out[cfg.clientIPHeader] = ip
        if cfg.clientHostnameHeader:
            out[cfg.clientHostnameHeader] = await resolve_name(ip, port)
        return out

    async def _serve(self, conn: TcpConnection) -> None:
        """Frame, parse and commit what the connection sends, until EOF or stop."""
        framer = SyslogFramer(self.config.eventSize)
        try:
            extra = await self._conn_headers(conn)
            while True:
                if not conn.chunks:
                    if conn.eof or self._stopping.is_set():
                        break
                    conn.resume()
                    await conn.wakeup.wait()
                    continue
                data = conn.take_input()
                lines, cut = framer.feed(data)
                if lines:
                    await self._deliver(conn, lines, cut, extra)
            lines, cut = framer.close()
            if lines:
                await self._deliver(conn, lines, cut, extra)
        except Exception:
            log.exception("Source %s: connection from %s failed.", self.name, conn.peer[0])
            self.counter.GenericProcessingFail += 1
        finally:
            self._connections.discard(conn)
            if conn.transport is not None:
                conn.transport.close()

    def _to_events(
        self, conn: TcpConnection, lines: list[bytes], cut: list[int]
    ) -> tuple[list[Event], int]:
        events, bad = self.parser.parse(lines)
        for i in cut:
            events[i].headers.setdefault(STATUS, INCOMPLETE)
        return events, bad

    async def _deliver(
        self, conn: TcpConnection, lines: list[bytes], cut: list[int], extra: dict[str, str]
    ) -> None:
        events, bad = self._to_events(conn, lines, cut)
        if extra:
            for e in events:
                e.headers.update(extra)
        counter = self.counter
        counter.EventReceivedCount += len(events)
        if bad:
            counter.EventReadFail += bad
            first = next(e for e in events if e.headers.get(STATUS) == "Invalid")
            self._bad_log.warn(
                "Source %s: %d invalid syslog message(s) from %s, kept with %s=Invalid; first: %r",
                self.name,
                bad,
                conn.peer[0],
                STATUS,
                first.body[:200],
            )
        if cut:
            self._bad_log.warn(
                "Source %s: %d message(s) from %s longer than eventSize %d were cut (%s=%s).",
                self.name,
                len(cut),
                conn.peer[0],
                self.config.eventSize,
                STATUS,
                INCOMPLETE,
            )
        await self._commit(conn, events)

    async def _commit(self, conn: TcpConnection, events: list[Event]) -> None:
        await commit_held(self, events, self._stopping, self._warn, conn.pause)


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
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF_MAX)
            continue
        counter.EventAcceptedCount += len(events)
        return


async def resolve_name(ip: str, port: int) -> str:
    """Reverse-resolve `ip` (Flume's getHostName): the IP itself when that fails."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            host, _ = await loop.getnameinfo((ip, port), socket.NI_NAMEREQD)
    except (OSError, TimeoutError):
        return ip
    return str(host)
