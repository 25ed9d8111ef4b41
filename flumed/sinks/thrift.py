"""Sink `thrift`: Flume's ThriftSink — sends batches to a ThriftSource with `appendBatch`.

One connection, one call in flight. A batch is committed from the channel only once
the receiver answered `OK`; `FAILED`, an exception reply, a timeout or a lost
connection roll it back (the events stay at the head of the channel, in order) and the
runner backs off. The connection is made before anything is taken from the channel:
while the next hop is down the sink takes nothing, counts each refused connection in
ConnectionFailedCount and tries again after the runner's backoff.

Keys as Flume's: `hostname`, `port`, `batch-size`, `connect-timeout`, `request-timeout`
(ms), `connection-reset-interval` (s; Flume's code reads `reset-connection-interval`,
both are accepted), `protocol` (compact | binary), `ssl`, `trust-all-certs`,
`truststore` (PEM CA file), `include-protocols` / `exclude-protocols`, `kerberos` (only
false). flumed's own: `ssl-verify-hostname`, `max-frame-bytes`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import ignored, key
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.rpc.thrift_protocol import (
    APPEND_BATCH,
    DEFAULT_MAX_FRAME,
    Proto,
    ProtocolError,
    RemoteError,
    Status,
    decode_reply,
    encode_append_batch,
)
from flumed.sinks.base import TAKE_TIMEOUT, Sink
from flumed.sinks.base import Status as SinkStatus
from flumed.tls import STORE_TYPES, protocol_problems, start_client_context

log = logging.getLogger("flumed.sinks.thrift")


@dataclass(frozen=True, slots=True)
class ThriftSinkConfig:
    hostname: str = key()
    port: int = key(ge=1, le=65535)
    batch_size: int = key(100, name="batch-size", ge=1)
    connect_timeout: int = key(20000, name="connect-timeout", ge=1000, doc="ms")
    request_timeout: int = key(20000, name="request-timeout", ge=1000, doc="ms")
    connection_reset_interval: int = key(
        0, name="connection-reset-interval", aliases=("reset-connection-interval",), ge=0
    )
    protocol: Literal["compact", "binary"] = key("compact")
    ssl: bool = key(False)
    trust_all_certs: bool = key(False, name="trust-all-certs")
    truststore: str | None = key(
        None, doc="Trusted CAs: a PEM file or a JKS/JCEKS/PKCS12 truststore"
    )
    truststore_type: str = key("PEM", name="truststore-type", doc="Found from the content.")
    truststore_password: str | None = key(None, name="truststore-password")
    include_protocols: list[str] = key([], name="include-protocols")
    exclude_protocols: list[str] = key([], name="exclude-protocols")
    ssl_verify_hostname: bool = key(True, name="ssl-verify-hostname")
    kerberos: bool = key(False)
    max_frame_bytes: int = key(DEFAULT_MAX_FRAME, name="max-frame-bytes", ge=1024)

    IGNORED = ignored(
        "maxConnections",
        "client-principal",
        "client-keytab",
        "server-principal",
    )

    def check(self) -> list[str]:
        problems = []
        if self.truststore_type.upper() not in STORE_TYPES:
            problems.append(
                f"key 'truststore-type': {self.truststore_type!r}; expected one of "
                + ", ".join(STORE_TYPES)
            )
        if self.kerberos:
            problems.append("kerberos = true is not supported by flumed (SASL/GSSAPI)")
        problems += protocol_problems(self.include_protocols, self.exclude_protocols)
        return problems


class ConnectFailed(Exception):
    """The TCP connection or the TLS handshake to the next hop failed."""


class ThriftRpcClient:
    """One framed Thrift connection to a ThriftSource, one call at a time.

    Used by one task (the sink's runner). Every failure closes the connection, whose
    state is then unknown; `connect()` opens a new one.
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
    def address(self) -> str:
        return f"{self.host}:{self.port}"

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
        self.close()
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
            raise ConnectFailed(f"cannot connect to {self.address}: {reason}") from e
        self.connected_at = time.monotonic()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def append_batch(self, events: Sequence[Event]) -> Status:
        """Send `events` with appendBatch and return the receiver's Status.

        A batch whose frame would exceed `max_frame` goes as several calls (the first
        status other than OK is returned; the parts already accepted are then sent
        again with the retry, as Flume's chunked batches are).

        Raises:
            ConnectionError, TimeoutError, OSError: the call did not complete.
            ProtocolError: the reply was malformed, or one event alone is over max_frame.
            RemoteError: the receiver answered with a TApplicationException.
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
            raise ConnectionError(f"not connected to {self.address}")
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
        except asyncio.IncompleteReadError as e:
            self.close()
            raise ConnectionError(f"{self.address} closed the connection") from e
        except BaseException:
            self.close()
            raise


class ThriftSink(Sink):
    Config = ThriftSinkConfig
    description = "Sends events to a Thrift source (the next agent tier)."
    config: ThriftSinkConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.client: ThriftRpcClient | None = None

    async def start(self) -> None:
        cfg = self.config
        ctx = None
        if cfg.ssl:
            ctx = start_client_context(
                f"sink {self.name}",
                cfg.truststore,
                cfg.trust_all_certs,
                cfg.ssl_verify_hostname,
                cfg.include_protocols,
                cfg.exclude_protocols,
                cfg.truststore_password,
            )
        self.client = ThriftRpcClient(
            cfg.hostname,
            cfg.port,
            cfg.protocol,
            cfg.connect_timeout / 1000,
            cfg.request_timeout / 1000,
            ctx,
            cfg.max_frame_bytes,
        )
        log.info(
            "Sink %s sends to %s (Thrift RPC, %s%s).",
            self.name,
            self.client.address,
            cfg.protocol,
            ", TLS" if ctx else "",
        )
        await super().start()

    async def stop(self) -> None:
        if self.client is not None and self.client.writer is not None:
            self.client.close()
            self.counter.ConnectionClosedCount += 1
        await super().stop()

    async def _ensure_connected(self) -> ThriftRpcClient:
        client = self.client
        assert client is not None, "process() before start()"
        interval = self.config.connection_reset_interval
        if client.writer is not None and (
            not client.connected
            or (interval and time.monotonic() - client.connected_at >= interval)
        ):
            # Closed by the receiver while idle, or due for the periodic reset that
            # lets a load balancer spread long-lived connections.
            client.close()
            self.counter.ConnectionClosedCount += 1
        if client.writer is None:
            try:
                await client.connect()
            except ConnectFailed as e:
                self.counter.ConnectionFailedCount += 1
                raise DeliveryError(f"Sink {self.name}: {e}") from e
            self.counter.ConnectionCreatedCount += 1
            log.info("Sink %s connected to %s.", self.name, client.address)
        return client

    async def process(self) -> SinkStatus:
        """Called by the sink runner. Raises DeliveryError (after the rollback) when the
        next hop is unreachable or did not answer OK."""
        client = await self._ensure_connected()
        n = self.config.batch_size
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(n, TAKE_TIMEOUT)
            self.counter.batch(len(events), n)
            if not events:
                return SinkStatus.BACKOFF
            self.counter.EventDrainAttemptCount += len(events)
            try:
                status = await client.append_batch(events)
            except (OSError, TimeoutError, ProtocolError, RemoteError) as e:
                self.counter.EventWriteFail += 1
                if client.writer is None:
                    self.counter.ConnectionClosedCount += 1
                why = "timed out" if isinstance(e, TimeoutError) else str(e)
                raise DeliveryError(
                    f"Sink {self.name}: appendBatch of {len(events)} events to "
                    f"{client.address} failed: {why}"
                ) from e
            if status is not Status.OK:
                self.counter.EventWriteFail += 1
                raise DeliveryError(
                    f"Sink {self.name}: {client.address} answered {status.name} to a batch of "
                    f"{len(events)} events (its channel is likely full); will retry"
                )
        self.counter.EventDrainSuccessCount += len(events)
        return SinkStatus.READY
