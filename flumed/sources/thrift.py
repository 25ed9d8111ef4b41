"""Source `thrift`: Flume's ThriftSource — `append` / `appendBatch` over framed Thrift.

Each call is answered only after its events are committed to the channels: `OK`, or
`FAILED` when a channel is full or the put failed, so that the sender rolls back and
retries. Calls on one connection are served in order; connections run concurrently.
The protocol (compact or binary) is recognised per connection from the first byte of
each message, and answered in kind, so compact and binary clients can share a port.

Input that is not Flume's Thrift RPC (garbage, an unframed client, a frame over
`max-frame-bytes`, a malformed message, a frame or TLS handshake left incomplete for
`frame-timeout` seconds) closes that one connection with a logged reason and counts
in EventReadFail; every other client goes on being served. A well-formed call over a
limit (`max-batch-events`, `max-event-headers`, `max-batch-headers`) is answered with a
Thrift application exception naming the key, nothing of it committed; the connection
goes on.

Keys as Flume's: `bind`, `port`, `protocol` (compact | binary; accepted, see above),
`ssl` with `keystore` (a PEM certificate chain; `keystore-key` or `key` for a separate
PEM key, `keystore-password` for its passphrase: flumed.tls.ServerTlsKeys),
`include-protocols` / `exclude-protocols`, `threads` (accepted, no effect: one event
loop serves all), `kerberos` (only false). flumed's own: `max-frame-bytes`, the limits
above, and those of every listening source (`maxConnections`, `idle-timeout`,
`frame-timeout`). The server side is flumed.sources.rpc_server (TLS through
flumed.rpc.stream's TlsLayer).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import ignored, key, listen_claims
from flumed.rpc.stream import Layer, StreamError, build_layers
from flumed.rpc.thrift_protocol import (
    DEFAULT_MAX_FRAME,
    UNKNOWN_METHOD,
    Call,
    FrameDecoder,
    LimitExceeded,
    Limits,
    ProtocolError,
    Status,
    decode_call,
    encode_exception,
    encode_reply,
)
from flumed.sources.rpc_server import DECODE_OFF_LOOP, RpcConnection, RpcServerSource
from flumed.sources.server import ListenerKeys
from flumed.tls import TLS_IGNORED, ServerTlsKeys

log = logging.getLogger("flumed.sources.thrift")

#: Most events one appendBatch may carry, headers of one event, headers of one call.
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_EVENT_HEADERS = 1000
DEFAULT_MAX_BATCH_HEADERS = 1_000_000
#: TApplicationException type INTERNAL_ERROR, for a call refused for its size.
_LIMIT_ERROR = 6


@dataclass(frozen=True, slots=True)
class ThriftSourceConfig(ListenerKeys, ServerTlsKeys):
    bind: str = key()
    port: int = key(ge=0, le=65535)
    protocol: Literal["compact", "binary"] = key(
        "compact", doc="Accepted; each connection is answered in the protocol it speaks."
    )
    kerberos: bool = key(False)
    max_frame_bytes: int = key(DEFAULT_MAX_FRAME, name="max-frame-bytes", ge=1024)
    max_batch_events: int = key(DEFAULT_MAX_EVENTS, name="max-batch-events", ge=1)
    max_event_headers: int = key(DEFAULT_MAX_EVENT_HEADERS, name="max-event-headers", ge=1)
    max_batch_headers: int = key(DEFAULT_MAX_BATCH_HEADERS, name="max-batch-headers", ge=1)

    IGNORED = {**TLS_IGNORED, **ignored("threads", "agent-principal", "agent-keytab")}

    def check(self) -> list[str]:
        problems = self.tls_problems(cert_key="keystore")
        if self.kerberos:
            problems.append("kerberos = true is not supported by flumed (SASL/GSSAPI)")
        return problems

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


class ThriftSource(RpcServerSource):
    Config = ThriftSourceConfig
    config: ThriftSourceConfig
    bad_input = (ProtocolError, StreamError)
    protocol_name = "Thrift RPC, framed"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._limits = Limits(
            config.max_batch_events, config.max_event_headers, config.max_batch_headers
        )

    def _framer(self) -> FrameDecoder:
        return FrameDecoder(self.config.max_frame_bytes)

    def _layers(self) -> list[Layer]:
        return build_layers(deflate_level=None, ssl_context=self._ssl, server_side=True)

    def _describe(self) -> str:
        return ", TLS" if self._ssl else ""

    async def start(self) -> None:
        self._ssl = self.config.server_ssl(f"source {self.name}")
        await super().start()

    async def _respond(
        self, conn: RpcConnection, serial: int, payload: bytes
    ) -> tuple[bytes, str | None]:
        """Decode one call, commit its events; the reply frame."""
        try:
            if len(payload) > DECODE_OFF_LOOP:
                call = await asyncio.to_thread(decode_call, payload, self._limits)
            else:
                call = decode_call(payload, self._limits)
        except LimitExceeded as e:
            refused: Call | None = getattr(e, "call", None)
            self.counter.EventReadFail += 1
            self._warn(
                "Source %s: refused a call from %s: %s.", self.name, conn.peer, e, kind="limit"
            )
            if refused is None:
                return b"", f"malformed Thrift message: {e}"
            return encode_exception(refused, _LIMIT_ERROR, str(e)), None
        except ProtocolError as e:
            return b"", f"malformed Thrift message: {e}"
        if call.events is None:
            self.counter.EventReadFail += 1
            self._warn("Source %s: %s called unknown method %r.", self.name, conn.peer, call.method)
            reply = encode_exception(call, UNKNOWN_METHOD, f"Invalid method name: '{call.method}'")
            return reply, None
        ok = await self._commit(conn, call.events, call.method == "appendBatch")
        return encode_reply(call, Status.OK if ok else Status.FAILED), None
