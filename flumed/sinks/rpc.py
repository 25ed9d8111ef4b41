"""The RPC sink base (Flume's AbstractRpcSink): `RpcSink` over an `RpcClient`, and the
keys every RPC sink shares (`RpcSinkKeys`, with the client TLS keys `tls.ClientTlsKeys`).

The `avro` and `thrift` sinks are this base plus a client. Per `process()` call:

1. Before taking anything, the connection is made (a next hop that is down costs the
   channel nothing): a refused connection is counted in ConnectionFailedCount and raises
   DeliveryError, so the runner backs off. A connection the receiver closed while idle,
   or one older than `reset-connection-interval` seconds, is closed first (Flume's
   periodic reset, which lets a load balancer spread long-lived connections).
2. One take of up to `batch-size` events, sent with one `appendBatch` call.
3. The take commits only once the receiver answered OK. Any RpcError (timeout, lost
   connection, malformed or error answer) or an answer other than OK raises
   DeliveryError: the take rolls back, the events stay at the head of the channel.

Keys (Flume's): `hostname`, `port`, `batch-size`, `connect-timeout`, `request-timeout`
(ms), `reset-connection-interval` (s; alias `connection-reset-interval`, the spelling of
Flume's thrift sink docs), and the client TLS keys: `ssl`, `trust-all-certs`,
`truststore` (a PEM CA file; else the system CAs), `truststore-type` (only PEM),
`include-protocols` / `exclude-protocols`, flumed's `ssl-verify-hostname`;
`truststore-password` and the cipher-suite keys are accepted and ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from ssl import SSLContext
from typing import ClassVar, Protocol

from flumed.config.keys import key
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.rpc.errors import ConnectFailed, RpcError
from flumed.sinks.base import BatchSink
from flumed.tls import CLIENT_TLS_IGNORED as CLIENT_TLS_IGNORED
from flumed.tls import ClientTlsKeys

log = logging.getLogger("flumed.sinks")


@dataclass(frozen=True, kw_only=True)
class RpcSinkKeys(ClientTlsKeys):
    """The keys every RPC sink has (a dataclass mixin; see the module doc)."""

    hostname: str = key()
    port: int = key(ge=1, le=65535)
    batch_size: int = key(100, name="batch-size", ge=1)
    connect_timeout: int = key(20000, name="connect-timeout", ge=1000, doc="ms")
    request_timeout: int = key(20000, name="request-timeout", ge=1000, doc="ms")
    reset_connection_interval: int = key(
        0,
        name="reset-connection-interval",
        aliases=("connection-reset-interval",),
        ge=0,
        doc="s; 0 never resets",
    )

    def check(self) -> list[str]:
        return self.tls_problems()


class RpcClient(Protocol):
    """One connection to a receiver, one call at a time (used by one sink's runner)."""

    #: "host:port", for messages.
    remote: str
    #: time.monotonic() of the last successful connect().
    connected_at: float

    @property
    def connected(self) -> bool:
        """True while the connection is open and the receiver has not closed it."""
        ...

    async def connect(self) -> None:
        """Open a new connection. Raises ConnectFailed, naming the address and cause."""
        ...

    async def close(self) -> None:
        """Close the connection, if any. Never raises."""
        ...

    async def append_batch(self, events: Sequence[Event]) -> Enum:
        """One appendBatch call; the receiver's Status. Raises RpcError (and then the
        connection is closed unless the receiver answered with a clean error)."""
        ...


class RpcSink(BatchSink):
    """Base of the sinks that send batches to an RPC receiver; see the module doc.

    Subclasses implement `make_client()` and set `protocol` (for messages).
    """

    protocol: ClassVar[str] = "RPC"
    #: Reset a connection older than reset-connection-interval also while idle
    #: (Flume's timer does); False resets only when there is a batch to send.
    reset_while_idle: ClassVar[bool] = True
    config: RpcSinkKeys

    def __init__(self, name: str, config: RpcSinkKeys) -> None:
        super().__init__(name, config)
        self.client: RpcClient | None = None
        self._open = False  # a connection counted in ConnectionCreatedCount, not yet closed

    def make_client(self, ssl_context: SSLContext | None) -> RpcClient:
        """Called by `start()`: the client of `self.config`'s receiver (no I/O yet)."""
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    async def start(self) -> None:
        context = self.config.client_ssl(f"sink {self.name}")
        self.client = client = self.make_client(context)
        log.info(
            "Sink %s sends to %s (%s RPC%s).",
            self.name,
            client.remote,
            self.protocol,
            ", TLS" if context else "",
        )
        await super().start()

    async def stop(self) -> None:
        if self.client is not None:
            await self._close(self.client)
        await super().stop()

    async def _close(self, client: RpcClient) -> None:
        await client.close()
        self._closed()

    def _closed(self) -> None:
        if self._open:
            self._open = False
            self.counter.ConnectionClosedCount += 1

    def _due_for_reset(self, client: RpcClient) -> bool:
        interval = self.config.reset_connection_interval
        return bool(interval) and time.monotonic() - client.connected_at >= interval

    async def _connect(self, client: RpcClient) -> None:
        """Raises DeliveryError when the connection cannot be made (counted)."""
        try:
            await client.connect()
        except ConnectFailed as e:
            self.counter.ConnectionFailedCount += 1
            raise DeliveryError(f"Sink {self.name}: {e}") from e
        self._open = True
        self.counter.ConnectionCreatedCount += 1
        log.info("Sink %s connected to %s.", self.name, client.remote)

    async def prepare(self) -> None:
        client = self.client
        assert client is not None, "process() before start()"
        if self._open and not client.connected:
            self._closed()  # closed by the receiver while idle, or by a failed call
        elif self._open and self.reset_while_idle and self._due_for_reset(client):
            await self._close(client)
        if not client.connected:
            await self._connect(client)

    async def deliver(self, events: list[Event]) -> None:
        client = self.client
        assert client is not None, "process() before start()"
        if not self.reset_while_idle and self._due_for_reset(client):
            await self._close(client)
            await self._connect(client)
        counter = self.counter
        try:
            status = await client.append_batch(events)
        except RpcError as e:
            counter.EventWriteFail += 1
            if not client.connected:
                self._closed()
            raise DeliveryError(
                f"Sink {self.name}: appendBatch of {len(events)} events to {client.remote} "
                f"failed: {e}"
            ) from e
        if status.name != "OK":
            counter.EventWriteFail += 1
            raise DeliveryError(
                f"Sink {self.name}: {client.remote} answered {status.name} to a batch of "
                f"{len(events)} events (its channel is likely full); will retry"
            )
