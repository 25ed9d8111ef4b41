"""The Thrift RPC client: one framed connection to a ThriftSource, one call in flight
(Flume's ThriftRpcClient). Used by the `thrift` sink."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence

from flumed.event import Event
from flumed.rpc.errors import ConnectFailed, ProtocolError, RpcError
from flumed.rpc.thrift_protocol import (
    APPEND_BATCH,
    DEFAULT_MAX_FRAME,
    Proto,
    Status,
    decode_reply,
    encode_append_batch,
)


class ThriftRpcClient:
    """A client of one ThriftSource. Not for concurrent use: one call at a time.

    Every failure closes the connection, whose state is then unknown; `connect()` opens
    a new one. `connect()` raises ConnectFailed, `append_batch()` RpcError.
    """

    def __init__(
        self,
        host: str,
        port: int,
        proto: Proto,
        connect_timeout: float,
        request_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.host = host
        self.port = port
        self.remote = f"{host}:{port}"
        self.proto = proto
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.ssl_context = ssl_context
        self.max_frame = max_frame
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connected_at = 0.0
        self._seqid = 0

    @property
    def connected(self) -> bool:
        """True while the connection is open and the server has not closed it."""
        return (
            self.writer is not None
            and self.reader is not None
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    async def connect(self) -> None:
        """Open the connection (and its TLS session).

        Raises:
            ConnectFailed: refused, unreachable, timed out, or the handshake failed.
        """
        self._drop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                self.reader, self.writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.connect_timeout if self.ssl_context else None,
                )
        except (OSError, TimeoutError) as e:
            reason = "timed out" if isinstance(e, TimeoutError) else (str(e) or type(e).__name__)
            raise ConnectFailed(f"cannot connect to {self.remote}: {reason}") from e
        self.connected_at = time.monotonic()

    async def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def append_batch(self, events: Sequence[Event]) -> Status:
        """Send `events` with appendBatch and return the receiver's Status.

        A batch whose frame would exceed `max_frame` goes as several calls (the first
        status other than OK is returned; the parts already accepted are then sent
        again with the retry, as Flume's chunked batches are).

        Raises:
            RpcError: the call did not complete (timeout, connection lost); ProtocolError
                when the reply was malformed or one event alone is over max_frame;
                RemoteError when the receiver answered with a TApplicationException.
        """
        frame = encode_append_batch(events, self._next_seqid(), self.proto)
        if len(frame) - 4 > self.max_frame:
            if len(events) == 1:
                raise ProtocolError(
                    f"an event of {len(events[0].body)} bytes does not fit in max-frame-bytes "
                    f"{self.max_frame}; the receiver would refuse it"
                )
            half = len(events) // 2
            status = await self.append_batch(events[:half])
            if status is not Status.OK:
                return status
            return await self.append_batch(events[half:])
        return await self._call(frame, APPEND_BATCH, self._seqid)

    def _next_seqid(self) -> int:
        self._seqid = (self._seqid + 1) & 0x7FFFFFFF
        return self._seqid

    async def _call(self, frame: bytes, method: str, seqid: int) -> Status:
        if self.writer is None or self.reader is None:
            raise RpcError(f"not connected to {self.remote}")
        reader, writer = self.reader, self.writer
        try:
            async with asyncio.timeout(self.request_timeout):
                writer.write(frame)
                await writer.drain()
                head = await reader.readexactly(4)
                n = int.from_bytes(head, "big")
                if n == 0 or n > self.max_frame:
                    raise ProtocolError(
                        f"reply frame of {n} bytes (max-frame-bytes {self.max_frame})"
                    )
                reply = await reader.readexactly(n)
            return decode_reply(reply, method, seqid, self.proto)
        except asyncio.IncompleteReadError:
            self._drop()
            raise RpcError(f"{self.remote} closed the connection") from None
        except TimeoutError:
            self._drop()
            raise RpcError(
                f"no answer from {self.remote} within {self.request_timeout:g}s"
            ) from None
        except OSError as e:
            self._drop()
            raise RpcError(f"connection to {self.remote} lost: {e}") from e
        except BaseException:
            self._drop()
            raise
