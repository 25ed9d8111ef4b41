"""Source `syslogtcp`: syslog over TCP (RFC 6587 framing), optionally TLS (RFC 5425).

Keys as Flume's SyslogTcpSource: `host` (all interfaces), `port`, `eventSize` (2500
bytes, at least 10), `keepFields` (`none`), `clientIPHeader`, `clientHostnameHeader`,
and TLS: `ssl`, `certificate` (`keystore`), `key`, `key-password`, `exclude-protocols`,
`include-protocols` (see flumed.tls). Limits and timeouts: `maxConnections`,
`idle-timeout`, `frame-timeout` (see flumed.sources.server). Flume's `format.*` custom
Java regex formats are refused with an error.

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
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from flumed.config.keys import key, listen_claims, prefix
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.sources.server import ListenerKeys, ListeningSource
from flumed.sources.syslog_parser import INCOMPLETE, STATUS, SyslogFramer, SyslogParser
from flumed.sources.tcp import STOP_GRACE, StreamConnection, close_connections, commit_held
from flumed.tls import TLS_IGNORED, ServerTlsKeys

log = logging.getLogger("flumed.sources.syslog")


@dataclass(frozen=True, slots=True)
class SyslogTcpConfig(ListenerKeys, ServerTlsKeys):
    port: int = key(ge=0, le=65535)
    host: str = key("0.0.0.0", doc="Address to bind (Flume: all interfaces).")
    eventSize: int = key(2500, ge=10, doc="Longest message in bytes; longer ones are cut.")
    keepFields: str = key("none", doc="none | all | some of: priority version timestamp hostname")
    clientIPHeader: str | None = key(None, doc="Header for the sender's IP address.")
    clientHostnameHeader: str | None = key(None, doc="Header for the sender's host name.")
    format: dict[str, Any] = prefix("format", doc="Refused: Flume's custom formats.")

    IGNORED = TLS_IGNORED

    def check(self) -> list[str]:
        return check_tcp_keys(self)

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


def check_tcp_keys(cfg: Any) -> list[str]:
    problems: list[str] = cfg.tls_problems()
    if cfg.format:
        problems.append(
            "keys 'format.*' (custom Java regex formats) are not supported by flumed; "
            "RFC 3164 and RFC 5424 are parsed built in"
        )
    return problems


class SyslogTcpSource(ListeningSource):
    """Syslog over TCP, one task per connection, batches of what each read brought."""

    Config: ClassVar[type] = SyslogTcpConfig
    config: Any

    #: Parser rules: Flume's SyslogUtils (syslogtcp/syslogudp) or SyslogParser (multiport).
    flavor: ClassVar[Literal["syslogtcp", "multiport"]] = "syslogtcp"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._log = RateLimitedLog(log)
        self._bad_log = RateLimitedLog(log)
        self.parser = SyslogParser(
            config.keepFields, flavor=self.flavor, utc3164=self.flavor == "multiport"
        )

    def _listen_ports(self) -> list[int]:
        return [self.config.port]

    async def start(self) -> None:
        ctx = self.config.server_ssl(f"Source {self.name}")
        await self._listen(
            self.config.host, self._listen_ports(), lambda: StreamConnection(self), ctx
        )
        log.info(
            "Source %s listening on %s port(s) %s%s.",
            self.name,
            self.config.host,
            " ".join(map(str, self.ports)),
            " (TLS)" if ctx else "",
        )
        await super().start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._close_listeners()
        # Read nothing more; what was received is still framed and committed.
        await close_connections(self._connections, STOP_GRACE + 1)
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
            progressed = True
            while (data := await conn.read(_begun(framer), progressed)) is not None:
                lines, cut = framer.feed(data)
                progressed = bool(lines)
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
        await commit_held(self, events, self._stopping, self._log, conn.pause)


def _begun(framer: SyslogFramer) -> bool:
    """True while the framer holds part of a message (frame-timeout applies)."""
    return bool(
        getattr(framer, "rest", b"")
        or getattr(framer, "frame_left", 0)
        or getattr(framer, "piece", b"")
    )


async def resolve_name(ip: str, port: int) -> str:
    """Reverse-resolve `ip` (Flume's getHostName): the IP itself when that fails."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            host, _ = await loop.getnameinfo((ip, port), socket.NI_NAMEREQD)
    except (OSError, TimeoutError):
        return ip
    return str(host)
