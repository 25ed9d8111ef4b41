"""Source `multiport_syslogtcp`: syslog over TCP on several ports at once.

Keys as Flume's MultiportSyslogTCPSource: `host` (all interfaces), `ports`
(space-separated), `eventSize` (2500), `keepFields` (`none`), `portHeader` (header for
the local port a message came in on), `charset.default` (UTF-8),
`charset.port.<port>`, `batchSize` (100: most events per channel call),
`clientIPHeader`, `clientHostnameHeader`, and the TLS keys of `syslogtcp`.
`readBufferBytes` and `numProcessors` are accepted and ignored.

Parsing follows Flume's SyslogParser rules (see flumed.sources.syslog_parser): headers
`Priority`/`Version` (capitalised), a `timestamp` always (the receive time when the
message has none), RFC 3164 stamps read as UTC, and a message that does not parse, or
does not decode in its port's charset, becomes an event with only
`flume.syslog.status=Invalid` and its raw bytes. Framing, push-back and TLS are those
of `syslogtcp`.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import ignored, key, listen_claims, prefix
from flumed.event import Event
from flumed.sources.server import ListenerKeys
from flumed.sources.syslog_parser import INVALID, STATUS
from flumed.sources.syslogtcp import SyslogTcpSource, check_tcp_keys
from flumed.sources.tcp import StreamConnection
from flumed.tls import TLS_IGNORED, ServerTlsKeys


@dataclass(frozen=True, slots=True)
class MultiportSyslogTcpConfig(ListenerKeys, ServerTlsKeys):
    ports: list[str] = key(doc="Space-separated ports to listen on.")
    host: str = key("0.0.0.0", doc="Address to bind (Flume: all interfaces).")
    eventSize: int = key(2500, ge=10, doc="Longest message in bytes; longer ones are cut.")
    keepFields: str = key("none", doc="none | all | some of: priority version timestamp hostname")
    portHeader: str | None = key(None, doc="Header for the local port of the connection.")
    charset_default: str = key("UTF-8", name="charset.default")
    charset_port: dict[str, Any] = prefix("charset.port", doc="charset.port.<port> = name")
    batchSize: int = key(100, ge=1, doc="Most events per channel call.")
    clientIPHeader: str | None = key(None)
    clientHostnameHeader: str | None = key(None)
    format: dict[str, Any] = prefix("format")

    IGNORED = {**TLS_IGNORED, **ignored("readBufferBytes", "readBufferSize", "numProcessors")}

    def port_numbers(self) -> list[int]:
        return [int(p) for p in self.ports]

    def claims(self) -> list[tuple[str, str]]:
        return [c for p in self.port_numbers() for c in listen_claims(p, key="ports")]

    def check(self) -> list[str]:
        problems = check_tcp_keys(self)
        nums: list[int] = []
        for p in self.ports:
            if not p.isdigit() or not 0 <= int(p) <= 65535:
                problems.append(f"key 'ports': {p!r} is not a port number (0-65535)")
            else:
                nums.append(int(p))
        if not self.ports:
            problems.append("key 'ports': at least one port is needed")
        dup = {n for n in nums if n and nums.count(n) > 1}
        if dup:
            problems.append(f"key 'ports': listed twice: {' '.join(map(str, sorted(dup)))}")
        for name in (self.charset_default, *map(str, self.charset_port.values())):
            try:
                codecs.lookup(name)
            except LookupError:
                problems.append(f"unknown charset {name!r}")
        for p in self.charset_port:
            if not p.isdigit() or int(p) not in nums:
                problems.append(f"key 'charset.port.{p}': {p} is not one of 'ports'")
        return problems


class MultiportSyslogTcpSource(SyslogTcpSource):
    Config = MultiportSyslogTcpConfig
    config: MultiportSyslogTcpConfig
    flavor = "multiport"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._charsets = {int(p): str(c) for p, c in config.charset_port.items()}

    def _listen_ports(self) -> list[int]:
        return self.config.port_numbers()

    async def _conn_headers(self, conn: StreamConnection) -> dict[str, str]:
        out = await super()._conn_headers(conn)
        if self.config.portHeader:
            out[self.config.portHeader] = str(conn.local_port)
        return out

    def _to_events(
        self, conn: StreamConnection, lines: list[bytes], cut: list[int]
    ) -> tuple[list[Event], int]:
        events, bad = super()._to_events(conn, lines, cut)
        charset = self._charsets.get(conn.local_port, self.config.charset_default)
        try:
            b"\n".join(lines).decode(charset)
        except UnicodeDecodeError:
            # Some line does not decode: it becomes Invalid with its raw bytes, as in Flume.
            for i, ln in enumerate(lines):
                try:
                    ln.decode(charset)
                except UnicodeDecodeError:
                    if events[i].headers.get(STATUS) != INVALID:
                        bad += 1
                    events[i] = Event(ln, {STATUS: INVALID})
        return events, bad

    async def _commit(self, conn: StreamConnection, events: list[Event]) -> None:
        n = self.config.batchSize
        for i in range(0, len(events), n):
            await super()._commit(conn, events[i : i + n])
