"""Byte-stream layers under an RPC framing: zlib compression and TLS, in either order.

Flume's Netty pipelines put these under the Avro framing. With both on, Flume 1.10+
puts zlib outside TLS (the wire carries zlib(TLS(packs))), Flume 1.9 the reverse; the
order is therefore a setting. TLS is done here with `ssl.SSLObject` over memory BIOs
rather than asyncio's own TLS transport, so that it can sit inside a zlib stream.

A `LayerStack` is owned by one connection and used from the event loop only.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Callable, Iterator
from typing import Literal

from flumed.rpc.errors import StreamError as StreamError

#: Decompressed bytes produced per step, so that the framing above sees (and can refuse)
#: an oversized frame before a compression bomb is fully inflated.
INFLATE_STEP = 1 << 20
TLS_READ = 1 << 18


class Layer:
    """One layer. `decode` turns bytes from below into bytes for above (an iterator of
    pieces); `encode` the reverse. `pending_out` returns bytes the layer itself wants to
    send downwards (TLS handshake records), to be called after each decode step."""

    ready = True

    def decode(self, data: bytes) -> Iterator[bytes]:
        raise NotImplementedError

    def encode(self, data: bytes) -> bytes:
        raise NotImplementedError

    def pending_out(self) -> bytes:
        return b""

    def start(self) -> None:
        """Called once the connection is up (a TLS client sends its hello here)."""


class ZlibLayer(Layer):
    """One zlib stream (RFC 1950 wrapper) per direction for the life of the connection,
    each write flushed with Z_SYNC_FLUSH, as Netty's JZlibEncoder/JZlibDecoder."""

    def __init__(self, level: int = 6) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, 15)
        self._d = zlib.decompressobj(15)

    def decode(self, data: bytes) -> Iterator[bytes]:
        d = self._d
        try:
            piece = d.decompress(data, INFLATE_STEP)
            if piece:
                yield piece
            while d.unconsumed_tail:
                piece = d.decompress(d.unconsumed_tail, INFLATE_STEP)
                if piece:
                    yield piece
        except zlib.error as e:
            raise StreamError(f"bad deflate stream: {e}") from None
        if d.eof:
            raise StreamError("deflate stream ended; the peer does not compress as configured")

    def encode(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)


class TlsLayer(Layer):
    """TLS over memory BIOs. Application bytes written before the handshake completes
    are held and sent once it has."""

    def __init__(
        self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self.ready = False
        self._held: list[bytes] = []

    def start(self) -> None:
        if not self._obj.server_side:
            self._handshake()

    def _handshake(self) -> None:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLError as e:
            raise StreamError(f"TLS handshake failed: {e.reason or e}") from None
        self.ready = True
        held, self._held = self._held, []
        for data in held:
            self._obj.write(data)

    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            self._in.write(data)
        if not self.ready:
            self._handshake()
            if not self.ready:
                return
        obj = self._obj
        while True:
            try:
                piece = obj.read(TLS_READ)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                return  # close_notify: the TCP close follows
            except ssl.SSLError as e:
                raise StreamError(f"TLS error: {e.reason or e}") from None
            if not piece:
                return
            yield piece

    def encode(self, data: bytes) -> bytes:
        if not self.ready:
            self._held.append(data)
            return b""
        try:
            self._obj.write(data)
        except ssl.SSLError as e:
            raise StreamError(f"TLS error: {e.reason or e}") from None
        return self._out.read()

    def pending_out(self) -> bytes:
        return self._out.read() if self._out.pending else b""


class LayerStack:
    """The layers of one connection, wire side first. `write` sends bytes on the wire
    (the transport's write)."""

    def __init__(self, layers: list[Layer], write: Callable[[bytes], None]) -> None:
        self.layers = layers
        self._write = write

    @property
    def ready(self) -> bool:
        """True once every layer can carry application bytes (TLS handshake done)."""
        return all(layer.ready for layer in self.layers)

    def start(self) -> None:
        """Raises StreamError."""
        for i, layer in enumerate(self.layers):
            layer.start()
            self._flush_down(i)

    def _flush_down(self, i: int) -> None:
        out = self.layers[i].pending_out()
        if out:
            for lower in reversed(self.layers[:i]):
                out = lower.encode(out)
            self._write(out)

    def from_wire(self, data: bytes) -> Iterator[bytes]:
        """Application bytes carried by `data`, in pieces. Raises StreamError."""
        return self._up(0, data)

    def _up(self, i: int, data: bytes) -> Iterator[bytes]:
        if i == len(self.layers):
            if data:
                yield data
            return
        for piece in self.layers[i].decode(data):
            self._flush_down(i)
            yield from self._up(i + 1, piece)
        self._flush_down(i)

    def to_wire(self, data: bytes) -> bytes:
        """The wire bytes for application bytes `data`. Raises StreamError."""
        for layer in reversed(self.layers):
            data = layer.encode(data)
            if not data:
                return b""  # held by TLS until its handshake is done
        return data


DeflateOrder = Literal["outside-ssl", "inside-ssl"]


def build_layers(
    *,
    deflate_level: int | None,
    ssl_context: ssl.SSLContext | None,
    server_side: bool,
    server_hostname: str | None = None,
    order: DeflateOrder = "outside-ssl",
) -> list[Layer]:
    """The layers for one connection, wire side first (an empty list: plain TCP)."""
    zl = ZlibLayer(deflate_level) if deflate_level is not None else None
    tl = TlsLayer(ssl_context, server_side, server_hostname) if ssl_context is not None else None
    layers = [zl, tl] if order == "outside-ssl" else [tl, zl]
    return [layer for layer in layers if layer is not None]
