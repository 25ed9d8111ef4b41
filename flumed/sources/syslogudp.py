"""Source `syslogudp`: syslog over UDP, one datagram one message.

Keys as Flume's SyslogUDPSource: `host` (all interfaces), `port`, `keepFields`
(`none`), `clientIPHeader`, `clientHostnameHeader`; plus flumed's
`maxBufferedDatagrams` (10000) and `receiveBufferBytes` (0: the system's default).
A trailing newline of a datagram is not part of the message.

UDP cannot push back. Datagrams are read as they come and queued, up to
`maxBufferedDatagrams`, while the channel is slow or full; past that they are dropped,
counted in `EventDroppedCount` (a flumed counter beside Flume's) and logged at most
every few seconds. Datagrams the kernel drops because its receive buffer overflowed
never reach flumed; raise `receiveBufferBytes` (bounded by net.core.rmem_max) for
bursts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key, listen_claims, prefix
from flumed.counters import UdpSourceCounter
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source
from flumed.sources.syslog_parser import SyslogParser
from flumed.sources.syslogtcp import resolve_name
from flumed.sources.tcp import STOP_GRACE, commit_held
from flumed.workers import sharing_ports

log = logging.getLogger("flumed.sources.syslog")

#: Most events committed in one call (the processor splits further by transactionCapacity).
MAX_BATCH = 10_000
#: Sender address → host name cache size (clientHostnameHeader).
NAME_CACHE = 4096


@dataclass(frozen=True, slots=True)
class SyslogUdpConfig:
    port: int = key(ge=0, le=65535)
    host: str = key("0.0.0.0", doc="Address to bind (Flume: all interfaces).")
    keepFields: str = key("none", doc="none | all | some of: priority version timestamp hostname")
    clientIPHeader: str | None = key(None)
    clientHostnameHeader: str | None = key(None)
    maxBufferedDatagrams: int = key(
        10_000, ge=1, doc="Datagrams queued while the channel is busy; more are dropped."
    )
    receiveBufferBytes: int = key(0, ge=0, doc="SO_RCVBUF; 0 keeps the system default.")
    format: dict[str, Any] = prefix("format", doc="Refused: Flume's custom formats.")

    def check(self) -> list[str]:
        if self.format:
            return [
                "keys 'format.*' (custom Java regex formats) are not supported by flumed; "
                "RFC 3164 and RFC 5424 are parsed built in"
            ]
        return []

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port, "udp")


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, source: SyslogUdpSource) -> None:
        self.source = source
        self.queue: deque[tuple[bytes, Any]] = deque()
        self.limit = source.config.maxBufferedDatagrams
        self.wakeup = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(self.queue) >= self.limit:
            self.source._dropped(1)
            return
        self.queue.append((data, addr))
        self.wakeup.set()

    def error_received(self, exc: Exception) -> None:
        self.source._warn.warn("Source %s: UDP receive error: %s", self.source.name, exc)


class SyslogUdpSource(Source):
    Config = SyslogUdpConfig
    config: SyslogUdpConfig
    counter: UdpSourceCounter
    counter_class = UdpSourceCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.parser = SyslogParser(config.keepFields)
        self._transport: asyncio.DatagramTransport | None = None
        self._receiver: _Receiver | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._warn = RateLimitedLog(log)
        self._drop_log = RateLimitedLog(log)
        self._bad_log = RateLimitedLog(log)
        self._names: dict[str, str] = {}
        self.port = 0

    def _dropped(self, n: int) -> None:
        self.counter.EventDroppedCount += n
        self._drop_log.warn(
            "Source %s: %d datagrams queued (maxBufferedDatagrams) while the channel is "
            "full or slow; dropping datagrams (EventDroppedCount = %d).",
            self.name,
            self.config.maxBufferedDatagrams,
            self.counter.EventDroppedCount,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self._stopping.clear()
        sock = socket.socket(
            socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_DGRAM
        )
        try:
            if sharing_ports():  # a worker: the port is shared with the others
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if cfg.receiveBufferBytes:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.receiveBufferBytes)
            sock.bind((cfg.host, cfg.port))
        except OSError:
            sock.close()
            raise
        receiver = self._receiver = _Receiver(self)
        transport, _ = await loop.create_datagram_endpoint(lambda: receiver, sock=sock)
        self._transport = transport
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-udp")
        log.info("Source %s listening on %s UDP port %d.", self.name, cfg.host, self.port)
        await super().start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._transport is not None:
            # Receive nothing more; what is queued is still committed.
            self._transport.close()
            self._transport = None
        if self._receiver is not None:
            self._receiver.wakeup.set()
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait({task}, timeout=STOP_GRACE + 1)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._receiver is not None and self._receiver.queue:
            log.error(
                "Source %s: stopped with %d received datagrams not committed.",
                self.name,
                len(self._receiver.queue),
            )
            self._receiver.queue.clear()
        await super().stop()

    async def _run(self) -> None:
        rx = self._receiver
        assert rx is not None
        while True:
            if not rx.queue:
                if self._stopping.is_set():
                    return
                rx.wakeup.clear()
                await rx.wakeup.wait()
                continue
            n = min(len(rx.queue), MAX_BATCH)
            pop = rx.queue.popleft
            batch = [pop() for _ in range(n)]
            try:
                await self._deliver(batch)
            except Exception:
                log.exception("Source %s: a batch of %d datagrams failed.", self.name, n)
                self.counter.GenericProcessingFail += 1

    async def _deliver(self, batch: list[tuple[bytes, Any]]) -> None:
        cfg = self.config
        # Empty datagrams carry no message.
        batch = [(line, addr) for d, addr in batch if (line := _strip(d))]
        if not batch:
            return
        events, bad = self.parser.parse([line for line, _ in batch])
        if cfg.clientIPHeader or cfg.clientHostnameHeader:
            await self._client_headers(events, batch)
        counter = self.counter
        counter.EventReceivedCount += len(events)
        if bad:
            counter.EventReadFail += bad
            self._bad_log.warn(
                "Source %s: %d invalid syslog datagram(s), kept with flume.syslog.status=Invalid.",
                self.name,
                bad,
            )
        await commit_held(self, events, self._stopping, self._warn)

    async def _client_headers(self, events: list[Event], batch: list[tuple[bytes, Any]]) -> None:
        cfg = self.config
        names = self._names
        for e, (_, addr) in zip(events, batch, strict=True):
            ip = str(addr[0])
            if cfg.clientIPHeader:
                e.headers[cfg.clientIPHeader] = ip
            if cfg.clientHostnameHeader:
                name = names.get(ip)
                if name is None:
                    if len(names) >= NAME_CACHE:
                        names.clear()
                    name = names[ip] = await resolve_name(ip, int(addr[1]))
                e.headers[cfg.clientHostnameHeader] = name


def _strip(d: bytes) -> bytes:
    """A datagram's message: without one trailing newline (and carriage return)."""
    if d[-1:] == b"\n":
        d = d[:-2] if d[-2:] == b"\r\n" else d[:-1]
    return d
