"""Source `avro`: Flume's AvroSource — Avro RPC (`append`, `appendBatch`) over Netty framing.

Each request is answered only after its events are committed to the channels: `OK`,
or `FAILED` when a channel is full or the put failed, so that the sender rolls back
and retries. Requests on one connection are served in order; connections run
concurrently. Input that is not Avro RPC (garbage, a bad handshake, an oversized or
stalled frame) closes that connection with a logged reason; other clients go on. A
well-formed request over a limit (`max-batch-events`, `max-event-headers`,
`max-batch-headers`) is answered with an Avro error naming the key, nothing of it
committed, and the connection goes on.

Keys as Flume's: `bind`, `port`, `compression-type` (none | deflate), `ssl`,
`include-protocols`/`exclude-protocols`, `ipFilter` with `ipFilterRules`, `threads`
(accepted, without effect, as in Flume 1.10+). Where Flume reads a Java keystore,
flumed reads PEM files (flumed.tls.ServerTlsKeys: `certificate`/`keystore`, `key`,
`key-password`). flumed's own: `max-frame-bytes`, `max-batch-events`,
`max-event-headers`, `max-batch-headers`, `compression-layer`, and the limits of every
listening source (`maxConnections`, `idle-timeout`, `frame-timeout`; see docs/avro.md
and docs/security.md). The server side is flumed.sources.rpc_server.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import ignored, key, listen_claims
from flumed.rpc.avro_protocol import (
    DEFAULT_MAX_PACK,
    HandshakeRequest,
    LimitExceeded,
    Match,
    PackDecoder,
    ProtocolError,
    Reader,
    ServerHandshake,
    Status,
    encode_error_response,
    encode_status_response,
    pack_header,
)
from flumed.rpc.ipfilter import IpFilter, parse_rules
from flumed.rpc.stream import Layer, StreamError, build_layers
from flumed.sources.rpc_server import DECODE_OFF_LOOP, RpcConnection, RpcServerSource
from flumed.sources.server import ListenerKeys
from flumed.tls import TLS_IGNORED, ServerTlsKeys

log = logging.getLogger("flumed.sources.avro")

#: Most events one appendBatch may carry (Flume has no limit; AvroSink sends batch-size).
DEFAULT_MAX_EVENTS = 100_000
#: Most headers of one event, and of all events of one request together.
DEFAULT_MAX_EVENT_HEADERS = 1000
DEFAULT_MAX_BATCH_HEADERS = 1_000_000
_OK = encode_status_response(Status.OK)
_FAILED = encode_status_response(Status.FAILED)


@dataclass(frozen=True, slots=True)
class AvroSourceConfig(ListenerKeys, ServerTlsKeys):
    bind: str = key()
    port: int = key(ge=0, le=65535)
    compression_type: Literal["none", "deflate"] = key("none", name="compression-type")
    ipFilter: bool = key(False)
    ipFilterRules: str | None = key(None)
    max_frame_bytes: int = key(
        DEFAULT_MAX_PACK,
        name="max-frame-bytes",
        ge=1024,
        doc="Largest frame (after inflating, with deflate); a longer one closes the connection.",
    )
    max_batch_events: int = key(DEFAULT_MAX_EVENTS, name="max-batch-events", ge=1)
    max_event_headers: int = key(DEFAULT_MAX_EVENT_HEADERS, name="max-event-headers", ge=1)
    max_batch_headers: int = key(DEFAULT_MAX_BATCH_HEADERS, name="max-batch-headers", ge=1)
    compression_layer: Literal["outside-ssl", "inside-ssl"] = key(
        "outside-ssl", name="compression-layer"
    )

    IGNORED = {**TLS_IGNORED, **ignored("threads")}

    def check(self) -> list[str]:
        problems = self.tls_problems()
        if self.ipFilter:
            if not self.ipFilterRules:
                problems.append("ipFilter = true needs 'ipFilterRules'")
            else:
                try:
                    parse_rules(self.ipFilterRules)
                except ValueError as e:
                    problems.append(f"key 'ipFilterRules': {e}")
        return problems

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


class AvroSource(RpcServerSource):
    Config = AvroSourceConfig
    config: AvroSourceConfig
    bad_input = (ProtocolError, StreamError)
    protocol_name = "Avro RPC"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._handshake = ServerHandshake()
        self._filter = IpFilter(parse_rules(config.ipFilterRules)) if config.ipFilter else None

    def _framer(self) -> PackDecoder:
        return PackDecoder(self.config.max_frame_bytes)

    def _layers(self) -> list[Layer]:
        cfg = self.config
        return build_layers(
            deflate_level=6 if cfg.compression_type == "deflate" else None,
            ssl_context=self._ssl,
            server_side=True,
            order=cfg.compression_layer,
        )

    def _describe(self) -> str:
        cfg = self.config
        return (", TLS" if cfg.ssl else "") + (
            ", deflate" if cfg.compression_type == "deflate" else ""
        )

    async def start(self) -> None:
        self._ssl = self.config.server_ssl(f"source {self.name}")
        await super().start()

    async def _respond(
        self, conn: RpcConnection, serial: int, payload: bytes
    ) -> tuple[bytes, str | None]:
        response, bad = await self._answer(conn, payload)
        return pack_header(serial, len(response)) + response, bad

    async def _answer(self, conn: RpcConnection, payload: bytes) -> tuple[bytes, str | None]:
        """The response to one request, and why the connection must close when the
        request was malformed (the error response is sent first)."""
        cfg = self.config
        r = Reader(payload)
        handshake = b""
        try:
            if not conn.established:
                resp = self._handshake.respond(HandshakeRequest.read(r))
                handshake = resp.encode()
                if resp.match is Match.NONE:
                    return handshake, None  # the client resends with its protocol
                conn.established = True
            r.read_map_bytes()
            message = r.read_string()
            if message == "appendBatch":
                limits = (cfg.max_batch_events, cfg.max_event_headers, cfg.max_batch_headers)
                if r.remaining > DECODE_OFF_LOOP:
                    events = await asyncio.to_thread(r.read_events, *limits)
                else:
                    events = r.read_events(*limits)
                batch = True
            elif message == "append":
                events = [r.read_event(cfg.max_event_headers)]
                batch = False
            elif message == "":
                return handshake, None  # a handshake ping
            else:
                self.counter.EventReadFail += 1
                self._warn(
                    "Source %s: %s called unknown message %r.", self.name, conn.peer, message
                )
                return encode_error_response(f"No message named {message!r}", handshake), None
        except LimitExceeded as e:
            # Well-formed but too large: refused with an error, nothing committed, the
            # connection goes on.
            self.counter.EventReadFail += 1
            self._warn(
                "Source %s: refused a request from %s: %s.", self.name, conn.peer, e, kind="limit"
            )
            return encode_error_response(str(e), handshake), None
        except ProtocolError as e:
            return encode_error_response(
                f"malformed request: {e}", handshake
            ), f"malformed request: {e}"
        ok = await self._commit(conn, events, batch)
        return handshake + (_OK if ok else _FAILED), None
