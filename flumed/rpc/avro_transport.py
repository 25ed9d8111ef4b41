"""The connection shared by the Avro RPC server and client: TCP, optional zlib/TLS
layers, Netty data packs in both directions."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

from flumed.rpc.avro_protocol import PackDecoder, ProtocolError, pack_header
from flumed.rpc.stream import Layer, LayerStack, StreamError

log = logging.getLogger("flumed.rpc.avro")


def tune_socket(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY and SO_KEEPALIVE on both sides, as Flume's Netty channels set them.
    Keepalive is what eventually notices a peer that vanished without a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:
        pass


class PackConnection(asyncio.Protocol):
    """Bytes in → layers → Netty packs → `packs_received`; `send_pack` the reverse.

    Subclasses implement `packs_received` and may extend `connection_made` /
    `connection_lost`. Any malformed input closes the connection through `fail()`,
    which records the reason in `error`.
    """

    def __init__(self, layers: Callable[[], list[Layer]], max_pack: int) -> None:
        self._make_layers = layers
        self.decoder = PackDecoder(max_pack)
        self.transport: asyncio.Transport | None = None
        self.stack: LayerStack | None = None
        self.peer = "?"
        self.closed = False
        self.error: str | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        tune_socket(transport)
        layers = self._make_layers()
        if layers:
            self.stack = LayerStack(layers, transport.write)
            try:
                self.stack.start()
            except StreamError as e:
                self.fail(str(e))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            if self.stack is None:
                packs = self.decoder.feed(data)
            else:
                packs = []
                for piece in self.stack.from_wire(data):
                    packs += self.decoder.feed(piece)
                if self.stack.ready:
                    self.stack_ready()
        except (ProtocolError, StreamError) as e:
            self.fail(str(e))
            return
        if packs:
            self.packs_received(packs)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- for subclasses --------------------------------------------------------------------
    def packs_received(self, packs: list[tuple[int, bytes]]) -> None:
        raise NotImplementedError

    def stack_ready(self) -> None:
        """Called after input once every layer is ready (the TLS handshake is done)."""

    @property
    def ready(self) -> bool:
        return self.stack is None or self.stack.ready

    def send_pack(self, serial: int, payload: bytes) -> None:
        """Write one pack (count 1). Raises nothing; a failure closes the connection."""
        t = self.transport
        if t is None or self.closed or t.is_closing():
            return
        if self.stack is None:
            t.writelines((pack_header(serial, len(payload)), payload))
            return
        try:
            t.write(self.stack.to_wire(pack_header(serial, len(payload)) + payload))
        except StreamError as e:
            self.fail(str(e))

    def fail(self, reason: str, abort: bool = True) -> None:
        """Close the connection because of the peer's input; `reason` says why.
        `abort` drops what is still buffered for the peer; otherwise it is flushed."""
        if self.error is None:
            self.error = reason
        self.close(abort)

    def close(self, abort: bool = False) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        self.writable.set()
