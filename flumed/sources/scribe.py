"""Source `scribe`: Flume's ScribeSource — Scribe's `Log(list<LogEntry>)` over framed
binary Thrift.

Each LogEntry becomes one event: the message is the body (its bytes as sent), the
category the `category` header. A Log call's entries are put in one channel
transaction: the answer is `OK` only after the commit, `TRY_LATER` when a channel
refuses them (full: push-back; the Scribe client keeps them and retries), never a part
of them. Calls on one connection are answered in order; connections run concurrently.

Input that is not Scribe's Thrift (garbage, an unframed or compact client, a frame over
`maxReadBufferBytes`, a malformed message, a frame left incomplete for `frame-timeout`
seconds) closes that one connection with a logged reason and counts in EventReadFail;
other clients go on. A call of another method (fb303's getStatus ...) is answered with a
Thrift application exception; the connection goes on.

Keys as Flume's: `port` (1499), `maxReadBufferBytes` (the largest frame), `workerThreads`
(accepted, no effect: one event loop serves every connection); flumed's own: `bind`
(Flume binds every address), `max-batch-events` (most entries in one call: a larger
call is answered with an exception, the connection goes on) and those of every listening
source (`maxConnections`,
`idle-timeout`, `frame-timeout`). The server side is flumed.sources.rpc_server; the
codec flumed.rpc.scribe_protocol. See docs/scribe.md.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from flumed.config.keys import ignored, key, listen_claims
from flumed.rpc.scribe_protocol import (
    ResultCode,
    decode_log,
    encode_error,
    encode_result,
)
from flumed.rpc.thrift_protocol import (
    DEFAULT_MAX_FRAME,
    INTERNAL_ERROR,
    UNKNOWN_METHOD,
    FrameDecoder,
    LimitExceeded,
    ProtocolError,
)
from flumed.sources.rpc_server import DECODE_OFF_LOOP, RpcConnection, RpcServerSource
from flumed.sources.server import ListenerKeys

log = logging.getLogger("flumed.sources.scribe")


@dataclass(frozen=True, slots=True)
class ScribeSourceConfig(ListenerKeys):
    port: int = key(1499, ge=0, le=65535, doc="TCP port (Scribe's default 1463; Flume's 1499).")
    bind: str = key("0.0.0.0", doc="flumed only: the address to listen on (Flume: every one).")
    maxReadBufferBytes: int = key(
        DEFAULT_MAX_FRAME,
        ge=1024,
        doc="Largest frame (one Log call) accepted; a larger one closes its connection.",
    )
    max_batch_events: int = key(
        100_000,
        name="max-batch-events",
        ge=1,
        doc="flumed only: most entries in one Log call; a larger call is answered with an "
        "exception (a 1-byte empty entry must not cost an event's memory unbounded).",
    )

    IGNORED = ignored("workerThreads")

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


class _ScribeFrames(FrameDecoder):
    """Thrift frames, with the limit named by this source's key."""

    __slots__ = ()

    def _bad_length(self, n: int, head: bytes) -> str:
        return super()._bad_length(n, head).replace("max-frame-bytes", "maxReadBufferBytes")


class ScribeSource(RpcServerSource):
    Config = ScribeSourceConfig
    config: ScribeSourceConfig
    bad_input = (ProtocolError,)
    protocol_name = "Scribe, framed binary Thrift"

    def _framer(self) -> FrameDecoder:
        return _ScribeFrames(self.config.maxReadBufferBytes)

    async def _respond(
        self, conn: RpcConnection, serial: int, payload: bytes
    ) -> tuple[bytes, str | None]:
        """Decode one call, commit its entries whole; the reply frame."""
        limit = self.config.max_batch_events
        try:
            if len(payload) > DECODE_OFF_LOOP:
                call = await asyncio.to_thread(decode_log, payload, limit)
            else:
                call = decode_log(payload, limit)
        except LimitExceeded as e:
            self.counter.EventReadFail += 1
            self._warn(
                "Source %s: refused a call from %s: %s.", self.name, conn.peer, e, kind="limit"
            )
            return encode_error(e.call, INTERNAL_ERROR, str(e)), None  # type: ignore[attr-defined]
        except ProtocolError as e:
            return b"", f"malformed Scribe message: {e}"
        if call.events is None:
            self.counter.EventReadFail += 1
            self._warn("Source %s: %s called unknown method %r.", self.name, conn.peer, call.method)
            msg = f"Invalid method name: '{call.method}'"
            return encode_error(call, UNKNOWN_METHOD, msg), None
        ok = await self._commit(conn, call.events, True)
        return encode_result(call, ResultCode.OK if ok else ResultCode.TRY_LATER), None
