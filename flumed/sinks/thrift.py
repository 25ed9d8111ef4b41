"""Sink `thrift`: Flume's ThriftSink — sends batches to a ThriftSource with `appendBatch`.

An `RpcSink` (flumed/sinks/rpc.py: connection before the take, commit only on `OK`,
counting, the shared keys) over `flumed.rpc.thrift_client.ThriftRpcClient`. While the
next hop is down the sink takes nothing, counts each refused connection in
ConnectionFailedCount and tries again after the runner's backoff. A connection older
than `reset-connection-interval` is replaced also while idle, as Flume's timer does.

Keys as Flume's: those of every RPC sink (`hostname`, `port`, `batch-size`,
`connect-timeout`, `request-timeout`, `connection-reset-interval` /
`reset-connection-interval`, the client TLS keys), `protocol` (compact | binary),
`kerberos` (only false). flumed's own: `max-frame-bytes`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

from flumed.config.keys import ignored, key
from flumed.rpc.thrift_client import ThriftRpcClient
from flumed.rpc.thrift_protocol import DEFAULT_MAX_FRAME
from flumed.sinks.rpc import CLIENT_TLS_IGNORED, RpcSink, RpcSinkKeys


@dataclass(frozen=True, kw_only=True)
class ThriftSinkConfig(RpcSinkKeys):
    protocol: Literal["compact", "binary"] = key("compact")
    kerberos: bool = key(False)
    max_frame_bytes: int = key(DEFAULT_MAX_FRAME, name="max-frame-bytes", ge=1024)

    IGNORED = {
        **CLIENT_TLS_IGNORED,
        **ignored("maxConnections", "client-principal", "client-keytab", "server-principal"),
    }

    @property
    def connection_reset_interval(self) -> int:
        """The name Flume's thrift sink documentation gives the key."""
        return self.reset_connection_interval

    def check(self) -> list[str]:
        problems = super().check()
        if self.kerberos:
            problems.append("kerberos = true is not supported by flumed (SASL/GSSAPI)")
        return problems


class ThriftSink(RpcSink):
    Config = ThriftSinkConfig
    protocol = "Thrift"
    config: ThriftSinkConfig

    def make_client(self, ssl_context: ssl.SSLContext | None) -> ThriftRpcClient:
        cfg = self.config
        return ThriftRpcClient(
            cfg.hostname,
            cfg.port,
            cfg.protocol,
            cfg.connect_timeout / 1000,
            cfg.request_timeout / 1000,
            ssl_context,
            cfg.max_frame_bytes,
        )
