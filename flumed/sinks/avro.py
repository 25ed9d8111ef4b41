"""Sink `avro`: Flume's AvroSink — sends batches to an AvroSource with `appendBatch`.

One connection, one call in flight. A batch is committed from the channel only once
the receiver answered `OK`; `FAILED`, an error, a timeout or a lost connection roll
it back (the events stay at the head of the channel) and the runner backs off. A
lost or refused connection is counted in ConnectionFailedCount and retried on the
next call, so a collector that comes back is found again.

Keys as Flume's: `hostname`, `port`, `batch-size`, `connect-timeout`,
`request-timeout` (ms), `reset-connection-interval` (s), `compression-type`,
`compression-level`, `ssl`, `trust-all-certs`, `truststore` (PEM CA file),
`include-protocols`/`exclude-protocols`. flumed's own: `ssl-verify-hostname`,
`max-frame-bytes`, `compression-layer`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import ignored, key
from flumed.errors import DeliveryError
from flumed.rpc.avro_client import AvroRpcClient, ConnectFailed, RpcError
from flumed.rpc.avro_protocol import DEFAULT_MAX_PACK
from flumed.rpc.avro_protocol import Status as RpcStatus
from flumed.sinks.base import TAKE_TIMEOUT, Sink, Status
from flumed.tls import STORE_TYPES, protocol_problems, start_client_context
from flumed.tls_ciphers import cipher_problems

log = logging.getLogger("flumed.sinks.avro")


@dataclass(frozen=True, slots=True)
class AvroSinkConfig:
    hostname: str = key()
    port: int = key(ge=1, le=65535)
    batch_size: int = key(100, name="batch-size", ge=1)
    connect_timeout: int = key(20000, name="connect-timeout", ge=1000, doc="ms")
    request_timeout: int = key(20000, name="request-timeout", ge=1000, doc="ms")
    reset_connection_interval: int = key(0, name="reset-connection-interval", ge=0, doc="s")
    compression_type: Literal["none", "deflate"] = key("none", name="compression-type")
    compression_level: int = key(6, name="compression-level", ge=0, le=9)
    ssl: bool = key(False)
    trust_all_certs: bool = key(False, name="trust-all-certs")
    truststore: str | None = key(
        None, doc="Trusted CAs: a PEM file or a JKS/JCEKS/PKCS12 truststore"
    )
    truststore_type: str = key("PEM", name="truststore-type", doc="Found from the content.")
    truststore_password: str | None = key(None, name="truststore-password")
    include_protocols: list[str] = key([], name="include-protocols")
    exclude_protocols: list[str] = key(["SSLv3"], name="exclude-protocols")
    include_cipher_suites: list[str] = key([], name="include-cipher-suites")
    exclude_cipher_suites: list[str] = key([], name="exclude-cipher-suites")
    ssl_verify_hostname: bool = key(True, name="ssl-verify-hostname")
    max_frame_bytes: int = key(DEFAULT_MAX_PACK, name="max-frame-bytes", ge=1024)
    compression_layer: Literal["outside-ssl", "inside-ssl"] = key(
        "outside-ssl", name="compression-layer"
    )

    IGNORED = ignored("maxIoWorkers")

    def check(self) -> list[str]:
        problems = []
        if self.truststore_type.upper() not in STORE_TYPES:
            problems.append(
                f"key 'truststore-type': {self.truststore_type!r}; expected one of "
                + ", ".join(STORE_TYPES)
            )
        problems += protocol_problems(self.include_protocols, self.exclude_protocols)
        problems += cipher_problems(self.include_cipher_suites, self.exclude_cipher_suites)
        return problems


class AvroSink(Sink):
    Config = AvroSinkConfig
    description = "Sends events to an Avro source (the next agent tier)."
    config: AvroSinkConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.client: AvroRpcClient | None = None
        self._last_warn = 0.0

    async def start(self) -> None:
        cfg = self.config
        context = None
        if cfg.ssl:
            context = start_client_context(
                f"sink {self.name}",
                cfg.truststore,
                cfg.trust_all_certs,
                cfg.ssl_verify_hostname,
                cfg.include_protocols,
                cfg.exclude_protocols,
                cfg.truststore_password,
                (cfg.include_cipher_suites, cfg.exclude_cipher_suites),
            )
        self.client = AvroRpcClient(
            cfg.hostname,
            cfg.port,
            connect_timeout=cfg.connect_timeout / 1000,
            request_timeout=cfg.request_timeout / 1000,
            deflate_level=cfg.compression_level if cfg.compression_type == "deflate" else None,
            ssl_context=context,
            deflate_order=cfg.compression_layer,
            max_pack=cfg.max_frame_bytes,
        )
        await super().start()

    async def stop(self) -> None:
        if self.client is not None and self.client.connected:
            await self.client.close()
            self.counter.ConnectionClosedCount += 1
        await super().stop()

    async def _connect(self, client: AvroRpcClient) -> None:
        """Raises DeliveryError when the connection cannot be made (counted)."""
        try:
            await client.connect()
        except ConnectFailed as e:
            self.counter.ConnectionFailedCount += 1
            raise DeliveryError(f"Avro sink {self.name}: {e}") from None
        self.counter.ConnectionCreatedCount += 1
        log.info("Sink %s connected to %s.", self.name, client.remote)

    async def process(self) -> Status:
        client = self.client
        assert client is not None, "start() first"
        if not client.connected:
            # Before taking anything: a next hop that is down costs the channel nothing.
            await self._connect(client)
        n = self.config.batch_size
        counter = self.counter
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(n, TAKE_TIMEOUT)
            counter.batch(len(events), n)
            if not events:
                return Status.BACKOFF
            interval = self.config.reset_connection_interval
            if interval and time.monotonic() - client.connected_at >= interval:
                # Flume's periodic reset, done when there is something to send.
                await client.close()
                counter.ConnectionClosedCount += 1
                await self._connect(client)
            counter.EventDrainAttemptCount += len(events)
            try:
                status = await client.append_batch(events)
            except RpcError as e:
                counter.EventWriteFail += 1
                if not client.connected:
                    counter.ConnectionClosedCount += 1
                raise DeliveryError(f"Avro sink {self.name}: {e}") from None
            if status is not RpcStatus.OK:
                counter.EventWriteFail += 1
                raise DeliveryError(
                    f"Avro sink {self.name}: {client.remote} answered {status.name} "
                    f"to a batch of {len(events)} events"
                )
        counter.EventDrainSuccessCount += len(events)
        return Status.READY
