"""Sink `avro`: Flume's AvroSink — sends batches to an AvroSource with `appendBatch`.

An `RpcSink` (flumed/sinks/rpc.py: connection before the take, commit only on `OK`,
counting, the shared keys) over `flumed.rpc.avro_client.AvroRpcClient`. A lost or
refused connection is counted in ConnectionFailedCount and retried on the next call,
so a collector that comes back is found again. The periodic reset
(`reset-connection-interval`) is done when there is a batch to send.

Keys as Flume's: those of every RPC sink (`hostname`, `port`, `batch-size`,
`connect-timeout`, `request-timeout`, `reset-connection-interval`, the client TLS keys),
and `compression-type`, `compression-level`. flumed's own: `max-frame-bytes`,
`compression-layer`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

from flumed.config.keys import ignored, key
from flumed.rpc.avro_client import AvroRpcClient
from flumed.rpc.avro_protocol import DEFAULT_MAX_PACK
from flumed.sinks.rpc import CLIENT_TLS_IGNORED, RpcSink, RpcSinkKeys


@dataclass(frozen=True, kw_only=True)
class AvroSinkConfig(RpcSinkKeys):
    compression_type: Literal["none", "deflate"] = key("none", name="compression-type")
    compression_level: int = key(6, name="compression-level", ge=0, le=9)
    max_frame_bytes: int = key(DEFAULT_MAX_PACK, name="max-frame-bytes", ge=1024)
    compression_layer: Literal["outside-ssl", "inside-ssl"] = key(
        "outside-ssl", name="compression-layer"
    )

    IGNORED = {**CLIENT_TLS_IGNORED, **ignored("maxIoWorkers")}


class AvroSink(RpcSink):
    Config = AvroSinkConfig
    protocol = "Avro"
    reset_while_idle = False
    config: AvroSinkConfig

    def make_client(self, ssl_context: ssl.SSLContext | None) -> AvroRpcClient:
        cfg = self.config
        return AvroRpcClient(
            cfg.hostname,
            cfg.port,
            connect_timeout=cfg.connect_timeout / 1000,
            request_timeout=cfg.request_timeout / 1000,
            deflate_level=cfg.compression_level if cfg.compression_type == "deflate" else None,
            ssl_context=ssl_context,
            deflate_order=cfg.compression_layer,
            max_pack=cfg.max_frame_bytes,
        )
