"""The Avro RPC client: one connection, one call in flight (Flume's NettyAvroRpcClient).

Used by the `avro` sink and by `flumed send`. The handshake is sent with the first
call of each connection only; a `NONE` answer makes the client resend the same call
with its protocol text, as Java's Requestor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence

from flumed.event import Event
from flumed.rpc.avro_protocol import (
    DEFAULT_MAX_PACK,
    LOCAL_HASH,
    PROTOCOL_JSON,
    HandshakeRequest,
    HandshakeResponse,
    Match,
    ProtocolError,
    Reader,
    RemoteError,
    Status,
    compatibility_problem,
    encode_append,
    encode_append_batch,
    read_status_response,
)
from flumed.rpc.avro_transport import PackConnection
from flumed.rpc.errors import ConnectFailed as ConnectFailed
from flumed.rpc.errors import RpcError as RpcError
from flumed.rpc.stream import DeflateOrder, Layer, StreamError, build_layers

#: The server hash learned per remote "host:port" (Java keeps a JVM-wide map too), so
#: that a reconnect guesses right and gets `BOTH` at once.
REMOTE_HASHES: dict[str, bytes] = {}


class _ClientConnection(PackConnection):
    def __init__(self, layers: Callable[[], list[Layer]], max_pack: int) -> None:
        super().__init__(layers, max_pack)
        loop = asyncio.get_running_loop()
        self.ready_fut: asyncio.Future[None] = loop.create_future()
        self.response: asyncio.Future[bytes] | None = None
        self.expected = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.ready and not self.closed:
            self.ready_fut.set_result(None)

    def stack_ready(self) -> None:
        if not self.ready_fut.done():
            self.ready_fut.set_result(None)

    def packs_received(self, packs: list[tuple[int, bytes]]) -> None:
        for serial, payload in packs:
            fut = self.response
            if fut is None or fut.done() or serial != self.expected:
                self.fail(f"response with unexpected serial {serial}")
                return
            self.response = None
            fut.set_result(payload)

    def _abandon(self, reason: str) -> None:
        for fut in (self.ready_fut, self.response):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(reason))
        # Nobody may be waiting on them; do not warn about never-retrieved exceptions.
        for fut in (self.ready_fut, self.response):
            if fut is not None and fut.done() and not fut.cancelled():
                fut.exception()

    def fail(self, reason: str, abort: bool = True) -> None:
        super().fail(reason, abort)
        self._abandon(reason)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        reason = self.error or (str(exc) if exc else "connection closed by the peer")
        self._abandon(reason)


class AvroRpcClient:
    """A client of one AvroSource. Not for concurrent use: one call at a time.

    `connect()` raises ConnectFailed; `append_batch()` / `append()` raise RpcError
    (and close the connection unless the peer answered with a clean error).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 20.0,
        request_timeout: float = 20.0,
        deflate_level: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        deflate_order: DeflateOrder = "outside-ssl",
        max_pack: int = DEFAULT_MAX_PACK,
    ) -> None:
        self.host = host
        self.port = port
        self.remote = f"{host}:{port}"
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._deflate_level = deflate_level
        self._ssl = ssl_context
        self._order: DeflateOrder = deflate_order
        self._max_pack = max_pack
        self._conn: _ClientConnection | None = None
        self._established = False
        self._send_protocol = False
        self._serial = 0
        self.connected_at = 0.0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _layers(self) -> list[Layer]:
        return build_layers(
            deflate_level=self._deflate_level,
            ssl_context=self._ssl,
            server_side=False,
            server_hostname=self.host if self._ssl is not None else None,
            order=self._order,
        )

    async def connect(self) -> None:
        """Open the connection (and complete TLS) within connect_timeout.

        Raises:
            ConnectFailed: naming the address and the cause.
        """
        await self.close()
        loop = asyncio.get_running_loop()
        conn: _ClientConnection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _ClientConnection(self._layers, self._max_pack), self.host, self.port
                )
                await conn.ready_fut
        except TimeoutError:
            if conn is not None:
                conn.close(abort=True)
            raise ConnectFailed(
                f"cannot connect to {self.remote}: no connection within {self.connect_timeout:g}s"
            ) from None
        except (OSError, ConnectionError, StreamError) as e:
            if conn is not None:
                conn.close(abort=True)
            reason = conn.error if conn is not None and conn.error else str(e)
            raise ConnectFailed(f"cannot connect to {self.remote}: {reason}") from None
        self._conn = conn
        self._established = False
        self._send_protocol = False
        self.connected_at = time.monotonic()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def append_batch(self, events: Sequence[Event]) -> Status:
        """Send `events` in one appendBatch call; the receiver's Status.

        Raises:
            RpcError: not connected, timeout, connection lost, malformed or error answer.
        """
        return await self._call(lambda hs: encode_append_batch(events, hs))

    async def append(self, event: Event) -> Status:
        """Send one event with the `append` message. Raises RpcError."""
        return await self._call(lambda hs: encode_append(event, hs))

    def _handshake(self) -> bytes:
        server_hash = REMOTE_HASHES.get(self.remote, LOCAL_HASH)
        proto = PROTOCOL_JSON if self._send_protocol else None
        return HandshakeRequest(LOCAL_HASH, proto, server_hash).encode()

    async def _call(self, build: Callable[[bytes], bytes]) -> Status:
        for _ in range(2):  # a NONE answer is followed by one resend with our protocol
            handshake = b"" if self._established else self._handshake()
            r = Reader(await self._roundtrip(build(handshake)))
            try:
                if handshake and not self._handshake_done(HandshakeResponse.read(r)):
                    continue
                return read_status(r)
            except ProtocolError as e:
                await self.close()
                raise RpcError(f"malformed answer from {self.remote}: {e}") from None
        await self.close()
        raise RpcError(f"handshake with {self.remote} failed")

    def _handshake_done(self, resp: HandshakeResponse) -> bool:
        """Apply a handshake response. False: resend the call with our protocol text.

        Raises:
            ProtocolError: the server's protocol is not AvroSourceProtocol.
        """
        if resp.match is not Match.BOTH:
            if resp.server_protocol is not None:
                problem = compatibility_problem(resp.server_protocol)
                if problem is not None:
                    raise ProtocolError(f"the server's protocol does not fit: {problem}")
            if resp.server_hash is not None:
                REMOTE_HASHES[self.remote] = resp.server_hash
        if resp.match is Match.NONE:
            if self._send_protocol:
                raise ProtocolError("the server answered NONE although we sent our protocol")
            self._send_protocol = True
            return False
        self._established = True
        self._send_protocol = False
        return True

    async def _roundtrip(self, payload: bytes) -> bytes:
        conn = self._conn
        if conn is None or conn.closed:
            raise RpcError(f"not connected to {self.remote}")
        self._serial = self._serial + 1 if self._serial < 0x7FFFFFFF else 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        conn.response = fut
        conn.expected = self._serial
        ok = False
        try:
            async with asyncio.timeout(self.request_timeout):
                conn.send_pack(self._serial, payload)
                if conn.closed:
                    raise ConnectionError(conn.error or "connection closed")
                await conn.writable.wait()
                data = await fut
            ok = True
            return data
        except TimeoutError:
            raise RpcError(
                f"no answer from {self.remote} within {self.request_timeout:g}s"
            ) from None
        except ConnectionError as e:
            raise RpcError(f"connection to {self.remote} lost: {e}") from None
        finally:
            if not ok:
                # Also on cancellation: a late answer must not meet the next call.
                conn.close(abort=True)
                if self._conn is conn:
                    self._conn = None
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    if fut.done() and not fut.cancelled():
                        fut.exception()


def read_status(r: Reader) -> Status:
    """The Status of a call response (after any handshake). Raises RpcError for an
    error response, ProtocolError for malformed bytes."""
    try:
        return read_status_response(r)
    except RemoteError as e:
        raise RpcError(f"the server answered with an error: {e}") from None
