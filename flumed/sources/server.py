"""What every listening TCP source shares (netcat, syslogtcp, multiport_syslogtcp, avro,
thrift; the http source gets the same from flumed.http_server):

- `ListenerKeys`: the connection cap and the timeouts, declared once (a dataclass mixin).
- `FlowControl`: one connection's push-back, with one threshold (`HIGH_WATER`) for every
  stream source: reading stops while input waits unprocessed, answers wait unread, or the
  channel refuses a batch.
- `Listener`: binds and runs its own accept loop, so that connections past
  `maxConnections` are refused at once (closed, counted) and an accept that fails for lack
  of file descriptors is logged (rate-limited), counted, and retried after a pause instead
  of spinning; accepted sockets get the source's protocol, with TLS when configured (the
  handshake bounded by `frame-timeout`).
- `ListeningSource`: the Source base that owns the listeners, the connections and the
  rate-limited warnings.

What one connection can pin is documented in docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flumed.config.keys import key
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source
from flumed.workers import sharing_ports

log = logging.getLogger("flumed.sources")

#: The one flow-control threshold of the stream sources: reading of a connection stops past
#: this many bytes of unprocessed input, and past this many bytes of answers its peer has
#: not read.
HIGH_WATER = 1 << 20
#: The most input handed to a connection's task at once (bounds the events alive per read).
READ_MAX = 64 << 10
#: Defaults of the keys below.
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_FRAME_TIMEOUT = 60.0
#: accept() calls per wake-up of a listening socket, so one busy port cannot starve the loop.
ACCEPT_BATCH = 64
#: Pause of a listener after accept() failed for lack of descriptors or memory.
ACCEPT_RETRY = 0.5
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def kw_only(f: Any) -> Any:
    """Mark a `key()` field keyword-only: for a config that overrides a mixin's key (its
    default) after its own required keys."""
    f.kw_only = True
    return f


@dataclass(frozen=True, kw_only=True)
class ListenerKeys:
    """The limits every listening source has (a dataclass mixin: not slotted, so that a
    config can include it beside ServerTlsKeys)."""

    maxConnections: int = key(
        DEFAULT_MAX_CONNECTIONS,
        ge=1,
        doc="Most connections at once; further ones are closed at once and counted.",
    )
    idle_timeout: float = key(
        DEFAULT_IDLE_TIMEOUT,
        name="idle-timeout",
        ge=0,
        doc="Seconds a connection may send nothing (nothing begun) before it is closed; 0: never.",
    )
    frame_timeout: float = key(
        DEFAULT_FRAME_TIMEOUT,
        name="frame-timeout",
        ge=0.001,
        doc="Seconds a begun message (line, frame, TLS handshake) may take, and a peer "
        "may leave its answers unread, before the connection is closed.",
    )


class FlowControl:
    """Push-back of one connection: its reading is paused while any hold is on.

    Holds: INPUT (more than HIGH_WATER bytes received, not yet processed), ANSWERS (the
    transport buffers more than HIGH_WATER bytes of answers the peer has not read:
    asyncio's pause_writing), CHANNEL (the channel refused a batch the connection holds).
    `writable` is clear while ANSWERS holds: the serving task waits on it before it
    produces more answers. Used from the event loop only.
    """

    INPUT = 1
    ANSWERS = 2
    CHANNEL = 4

    __slots__ = ("holds", "transport", "writable")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.holds = 0
        self.writable = asyncio.Event()
        self.writable.set()

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        with contextlib.suppress(AttributeError, NotImplementedError):
            transport.set_write_buffer_limits(high=HIGH_WATER)

    @property
    def paused(self) -> bool:
        return bool(self.holds)

    def hold(self, why: int) -> None:
        t = self.transport
        if not self.holds and t is not None and not t.is_closing():
            t.pause_reading()
        self.holds |= why

    def release(self, why: int) -> None:
        if not self.holds & why:
            return
        self.holds &= ~why
        t = self.transport
        if not self.holds and t is not None and not t.is_closing():
            t.resume_reading()

    def queued(self, n: int) -> None:
        """Report the bytes received and not yet processed (INPUT hold, with hysteresis)."""
        if n >= HIGH_WATER:
            self.hold(self.INPUT)
        elif n < HIGH_WATER // 2:
            self.release(self.INPUT)

    def pause_writing(self) -> None:
        self.writable.clear()
        self.hold(self.ANSWERS)

    def resume_writing(self) -> None:
        self.writable.set()
        self.release(self.ANSWERS)


class AcceptOwner(Protocol):
    """What a Listener needs of whoever owns it (a ListeningSource, the metrics endpoint)."""

    _stopping: asyncio.Event

    @property
    def handshake_timeout(self) -> float: ...

    def _admit(self, peer: str) -> bool: ...

    def _accept_failed(self, e: OSError) -> None: ...

    def _drop(self, peer: str, reason: str) -> None: ...


class ListeningSource(Source):
    """Base of the sources that accept TCP connections.

    Subclasses call `_listen()` from `start()` and `_close_listeners()` from `stop()`;
    each connection protocol adds itself to `_connections` when made and removes itself
    when closed (the cap counts them). `_warn` is the source's rate-limited warning line
    for bad input (at most one a second, with the count held back).
    """

    config: Any

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._connections: set[Any] = set()
        self._listeners: list[Listener] = []
        self._stopping = asyncio.Event()
        self.log = logging.getLogger(type(self).__module__)
        # One rate limit per kind of warning, so that one kind cannot hide another.
        self._logs: dict[str, RateLimitedLog] = {}
        #: The ports actually bound (port 0 asks the kernel for one).
        self.ports: list[int] = []

    @property
    def port(self) -> int:
        return self.ports[0] if self.ports else 0

    @property
    def handshake_timeout(self) -> float:
        """Seconds a TLS handshake may take (frame-timeout)."""
        return float(self.config.frame_timeout)

    def _rate_limited(self, kind: str) -> RateLimitedLog:
        rl = self._logs.get(kind)
        if rl is None:
            rl = self._logs[kind] = RateLimitedLog(self.log, interval=1.0, burst=10)
        return rl

    def _warn(self, msg: str, *args: object, kind: str = "input") -> None:
        """One warning line, at most one a second per `kind` (a fixed word: input,
        timeout, limit, channel, refused, accept), with the count held back."""
        self._rate_limited(kind).warn(msg, *args)

    def _drop(self, peer: str, reason: str) -> None:
        """Count and log (rate-limited) a connection closed for its input."""
        self.counter.EventReadFail += 1
        self._warn("Source %s: closing connection from %s: %s.", self.name, peer, reason)

    def _timed_out(self, peer: str, reason: str) -> None:
        self.counter.ConnectionTimedOutCount += 1
        self._warn(
            "Source %s: closing connection from %s: %s.", self.name, peer, reason, kind="timeout"
        )

    async def _listen(
        self,
        host: str,
        ports: list[int],
        factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Bind every port and start accepting. Raises OSError (the bind failed); then
        nothing stays bound."""
        self._stopping.clear()
        try:
            for port in ports:
                lst = Listener(self, factory, ssl_context)
                self._listeners.append(lst)
                self.ports.append(await lst.bind(host, port))
        except BaseException:
            await self._close_listeners()
            raise

    def _pending(self) -> int:
        """Accepted sockets still being attached (in their TLS handshake)."""
        return sum(len(lst.attaching) for lst in self._listeners)

    async def _close_listeners(self) -> None:
        """Stop accepting (connections already made go on)."""
        for lst in self._listeners:
            await lst.close()
        self._listeners.clear()
        self.ports = []

    def _admit(self, peer: str) -> bool:
        """Called by a listener for each accepted socket: False refuses it (the cap)."""
        cap = self.config.maxConnections
        if len(self._connections) + self._pending() < cap:
            return True
        self.counter.ConnectionRefusedCount += 1
        self._rate_limited("refused").warn(
            "Source %s: refused a connection from %s: %d connections open (maxConnections).",
            self.name,
            peer,
            cap,
        )
        return False

    def _accept_failed(self, e: OSError) -> None:
        self.counter.AcceptFailCount += 1
        self._rate_limited("accept").log(
            logging.ERROR,
            "Source %s: cannot accept connections: %s (raise the file descriptor limit, "
            "LimitNOFILE=, or lower maxConnections); retrying.",
            self.name,
            e,
        )


class Listener:
    """One listening socket of a source, with its own accept loop (see the module doc)."""

    def __init__(
        self,
        source: AcceptOwner,
        factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.source = source
        self.factory = factory
        self.ssl = ssl_context
        self.sock: socket.socket | None = None
        self.attaching: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None

    async def bind(self, host: str, port: int, backlog: int = 1024) -> int:
        """Bind and listen; returns the port bound. Raises OSError."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sharing_ports():  # a worker: the kernel spreads connections over workers
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        loop.add_reader(sock.fileno(), self._on_readable)
        return int(sock.getsockname()[1])

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        src = self.source
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _RESOURCE_ERRNOS:
                    # The pending connections wait in the backlog; retrying at once would
                    # spin on the same error.
                    src._accept_failed(e)
                    self._pause()
                    return
                continue  # ECONNABORTED and the like: that one client is gone
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            if src._stopping.is_set() or not src._admit(peer):
                conn.close()
                continue
            conn.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._attach(conn, peer))
            self.attaching.add(task)
            task.add_done_callback(self.attaching.discard)

    def _pause(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sock is not None and self._retry is None:
            loop.remove_reader(self.sock.fileno())
            self._retry = loop.call_later(ACCEPT_RETRY, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self.sock is not None:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_readable)

    async def _attach(self, conn: socket.socket, peer: str) -> None:
        """Give the accepted socket its protocol (after the TLS handshake, if any)."""
        loop = asyncio.get_running_loop()
        src = self.source
        try:
            if self.ssl is None:
                await loop.connect_accepted_socket(self.factory, conn)
            else:
                await loop.connect_accepted_socket(
                    self.factory,
                    conn,
                    ssl=self.ssl,
                    ssl_handshake_timeout=src.handshake_timeout,
                )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as e:
            conn.close()
            reason = getattr(e, "reason", None) or e
            if isinstance(e, TimeoutError):
                reason = f"no TLS handshake within {src.handshake_timeout:g}s"
            src._drop(peer, f"TLS handshake failed: {reason}" if self.ssl else str(reason))
        except Exception:  # a bug in a protocol factory: logged, the listener goes on
            conn.close()
            log.exception("Accepting a connection from %s failed.", peer)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.sock is not None:
            sock, self.sock = self.sock, None
            loop.remove_reader(sock.fileno())
            sock.close()
        for t in list(self.attaching):
            t.cancel()
        for t in list(self.attaching):
            with contextlib.suppress(asyncio.CancelledError):
                await t
