"""What flumed's HTTP servers (the `http` source, the metrics endpoint) add to aiohttp's
against hostile clients.

aiohttp has no timeout on a request's headers (slowloris), keeps an idle keep-alive
connection for an hour, and accepts connections without limit. Here each connection's
aiohttp protocol is wrapped in `GuardedConnection`, accepted by flumed's own Listener
(flumed.sources.server: the connection cap and EMFILE handling):

- `idle-timeout`: a connection with no request in progress (just opened, or between
  keep-alive requests) is closed after that many seconds without a byte;
- `header-timeout`: once a request's first byte is in, its headers must be complete
  (the handler called) within that many seconds;
- the body has its own deadline (`body-timeout`), applied by the handler around its
  read (`body_deadline`), answered 408;
- aiohttp's own limits stay: request line and header field 8190 bytes, 128 headers.

`guard_middleware` tells the guard when a request is being handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from aiohttp import web

log = logging.getLogger("flumed.http")

#: Defaults of the HTTP servers' keys.
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_HTTP_IDLE_TIMEOUT = 60.0


class GuardOwner(Protocol):
    """What a GuardedConnection needs of its server."""

    _connections: set[Any]
    _guards: dict[Any, GuardedConnection]

    @property
    def header_timeout(self) -> float: ...

    @property
    def http_idle_timeout(self) -> float: ...

    def _timed_out(self, peer: str, reason: str) -> None: ...


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the idle and header timeouts."""

    IDLE, HEADERS, BUSY = 0, 1, 2

    def __init__(self, owner: GuardOwner, inner: asyncio.Protocol) -> None:
        self.owner = owner
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.state = self.IDLE
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.owner._connections.add(self)
        self.owner._guards[self.inner] = self
        self.inner.connection_made(transport)
        self._arm(self.owner.http_idle_timeout, "sent no request")

    def data_received(self, data: bytes) -> None:
        if self.state == self.IDLE:
            self.state = self.HEADERS
            self._arm(self.owner.header_timeout, "left a request's headers incomplete")
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.owner._connections.discard(self)
        self.owner._guards.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- request state, from the middleware ------------------------------------------------
    def request_started(self) -> None:
        self.state = self.BUSY
        self._cancel()

    def request_done(self) -> None:
        self.state = self.IDLE
        self._arm(self.owner.http_idle_timeout, "sent no request")

    # -- timers ----------------------------------------------------------------------------
    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, seconds: float, why: str) -> None:
        self._cancel()
        if seconds > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(seconds, self._expired, seconds, why)

    def _expired(self, seconds: float, why: str) -> None:
        self._timer = None
        if self.state == self.BUSY or self.transport is None or self.transport.is_closing():
            return
        self.owner._timed_out(self.peer, f"it {why} for {seconds:g}s")
        self.transport.abort()


def guarded_factory(owner: GuardOwner, server: web.Server) -> Callable[[], asyncio.Protocol]:
    """The protocol factory for a Listener: aiohttp's handler inside a guard."""
    return lambda: GuardedConnection(owner, cast(asyncio.Protocol, server()))


def guard_middleware(owner: GuardOwner) -> Any:
    """An aiohttp middleware that tells each connection's guard when a request runs."""

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        g = owner._guards.get(request.protocol)
        if g is not None:
            g.request_started()
        try:
            return await handler(request)
        finally:
            if g is not None:
                g.request_done()

    return guard


class GuardedEndpoint:
    """The listener and guards of an HTTP endpoint that is not a source (the metrics
    endpoint): its own connection cap and timeouts, its warnings rate-limited and
    counted in `refused`, `timed_out` and `accept_failed`."""

    def __init__(
        self,
        name: str,
        max_connections: int = 100,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float = DEFAULT_HTTP_IDLE_TIMEOUT,
    ) -> None:
        from flumed.logs import RateLimitedLog

        self.name = name
        self.max_connections = max_connections
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._connections: set[Any] = set()
        self._guards: dict[Any, GuardedConnection] = {}
        self._stopping = asyncio.Event()
        self._log = RateLimitedLog(log, interval=1.0, burst=10)
        self._listener: Any = None
        self.refused = self.timed_out = self.accept_failed = self.bad = 0
        self.port = 0

    @property
    def header_timeout(self) -> float:
        return self._header_timeout

    @property
    def http_idle_timeout(self) -> float:
        return self._idle_timeout

    @property
    def handshake_timeout(self) -> float:
        return self._header_timeout

    def _admit(self, peer: str) -> bool:
        pending = len(self._listener.attaching) if self._listener is not None else 0
        if len(self._connections) + pending < self.max_connections:
            return True
        self.refused += 1
        self._log.warn(
            "%s: refused a connection from %s: %d connections open.",
            self.name,
            peer,
            self.max_connections,
        )
        return False

    def _accept_failed(self, e: OSError) -> None:
        self.accept_failed += 1
        self._log.log(
            logging.ERROR,
            "%s: cannot accept connections: %s (raise the file descriptor limit); retrying.",
            self.name,
            e,
        )

    def _drop(self, peer: str, reason: str) -> None:
        self.bad += 1
        self._log.warn("%s: closing connection from %s: %s.", self.name, peer, reason)

    def _timed_out(self, peer: str, reason: str) -> None:
        self.timed_out += 1
        self._log.warn("%s: closing connection from %s: %s.", self.name, peer, reason)

    async def start(self, server: web.Server, host: str, port: int) -> int:
        """Bind and accept; returns the port bound. Raises OSError."""
        from flumed.sources.server import Listener

        self._listener = Listener(self, guarded_factory(self, server), None)
        try:
            self.port = await self._listener.bind(host, port)
        except BaseException:
            await self._listener.close()
            self._listener = None
            raise
        return self.port

    async def stop(self) -> None:
        """Stop accepting and close every connection."""
        self._stopping.set()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        for g in list(self._connections):
            if g.transport is not None:
                g.transport.abort()
