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
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from flumed.config.keys import ignored, key, listen_claims, prefix
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source
from flumed.sources.syslog_parser import INCOMPLETE, STATUS, SyslogFramer, SyslogParser
from flumed.sources.tcp import STOP_GRACE, StreamConnection, close_connections, commit_held
from flumed.tls import check_tls, start_server_context

log = logging.getLogger("flumed.sources.syslog")

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

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


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


class SyslogTcpSource(Source):
    """Syslog over TCP, one task per connection, batches of what each read brought."""

    Config: ClassVar[type] = SyslogTcpConfig
    config: Any

    #: Parser rules: Flume's SyslogUtils (syslogtcp/syslogudp) or SyslogParser (multiport).
    flavor: ClassVar[Literal["syslogtcp", "multiport"]] = "syslogtcp"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[StreamConnection] = set()
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
        return start_server_context(
            f"Source {self.name}",
            cfg.certificate,
            cfg.key_file,
            cfg.key_password,
            cfg.include_protocols,
            cfg.exclude_protocols,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping.clear()
        ctx = self._ssl_context()
        try:
            for port in self._listen_ports():
                server = await loop.create_server(
                    lambda: StreamConnection(self),
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
        # Read nothing more; what was received is still framed and committed.
        await close_connections(self._connections, STOP_GRACE + 1)
        await self._close_servers()
        self.ports = []
        await super().stop()

    # -- per connection ----------------------------------------------------------------
    async def _conn_headers(self, conn: StreamConnection) -> dict[str, str]:
        """Headers every event of this connection carries (client IP / host name)."""
        cfg = self.config
        out: dict[str, str] = {}
        ip, port = conn.peer
        if cfg.clientIPHeader:
            out[cfg.clientIPHeader] = ip
        if cfg.clientHostnameHeader:
            out[cfg.clientHostnameHeader] = await resolve_name(ip, port)
        return out

    async def _serve(self, conn: StreamConnection) -> None:
        """Frame, parse and commit what the connection sends, until EOF or stop."""
        framer = SyslogFramer(self.config.eventSize)
        try:
            extra = await self._conn_headers(conn)
            while (data := await conn.read()) is not None:
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
            conn.close()

    def _to_events(
        self, conn: StreamConnection, lines: list[bytes], cut: list[int]
    ) -> tuple[list[Event], int]:
        events, bad = self.parser.parse(lines)
        for i in cut:
            events[i].headers.setdefault(STATUS, INCOMPLETE)
        return events, bad

    async def _deliver(
        self, conn: StreamConnection, lines: list[bytes], cut: list[int], extra: dict[str, str]
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

    async def _commit(self, conn: StreamConnection, events: list[Event]) -> None:
        await commit_held(self, events, self._stopping, self._warn, conn.pause)


async def resolve_name(ip: str, port: int) -> str:
    """Reverse-resolve `ip` (Flume's getHostName): the IP itself when that fails."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            host, _ = await loop.getnameinfo((ip, port), socket.NI_NAMEREQD)
    except (OSError, TimeoutError):
        return ip
    return str(host)
