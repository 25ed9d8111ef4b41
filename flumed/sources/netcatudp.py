"""Source `netcatudp`: one UDP datagram, one event (Flume's NetcatUdpSource).

Keys: `bind`, `port`, `remoteAddressHeader` (none by default; when set, that header
holds the sender as Flume writes it, `/127.0.0.1:5140`; Flume's code reads the key
`remoteAddress`, accepted as an alias). One trailing newline is stripped from each
datagram; the rest of it, newlines included, is the body (Flume keeps only the bytes
before the first newline).

Datagrams that arrive in one turn of the event loop are committed as one batch.

UDP cannot push back on its sender: this is the one source that may lose events.
While the channel refuses a batch (full after keep-alive), the source holds at most
`MAX_PENDING` datagrams, including the refused ones, and offers them again with a
growing backoff. Datagrams that arrive while that buffer is full are dropped, counted
in `EventDroppedCount` (beside Flume's counters) and logged at most every few
seconds. Use a TCP source (netcat, syslogtcp, avro) where nothing may be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key, listen_claims
from flumed.counters import UdpSourceCounter
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.lifecycle import stop_task
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source

log = logging.getLogger("flumed.sources.netcatudp")

#: Datagrams held while the channel refuses them; beyond this, new ones are dropped.
MAX_PENDING = 1000
RETRY_BACKOFF_MAX = 5.0
DROP_LOG_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class NetcatUdpConfig:
    bind: str = key()
    port: int = key(ge=0, le=65535)
    remoteAddressHeader: str | None = key(None, aliases=("remoteAddress",))

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port, "udp")


class _Protocol(asyncio.DatagramProtocol):
    """Only buffers: the source's task commits what arrived in one loop turn."""

    def __init__(self, source: NetcatUdpSource) -> None:
        self.source = source

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.source._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier sends; a receive-only socket can ignore them.
        log.debug("Source %s: socket error: %s", self.source.name, exc)


class NetcatUdpSource(Source):
    Config = NetcatUdpConfig
    config: NetcatUdpConfig
    counter: UdpSourceCounter
    counter_class = UdpSourceCounter

    #: Per instance, so that a test can make it small.
    max_pending = MAX_PENDING

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.port = config.port
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: list[Event] = []
        self._inflight = 0
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dropped_since_log = 0
        self._last_drop_log: float | None = None  # the first drop is always logged
        self._refused_log = RateLimitedLog(log, DROP_LOG_INTERVAL)
        self._error_log = RateLimitedLog(log, DROP_LOG_INTERVAL)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping.clear()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.config.bind, self.config.port)
        )
        self._transport = transport
        self.port = self._transport.get_extra_info("sockname")[1]
        self._task = asyncio.create_task(self._commit_loop(), name=f"netcatudp-{self.name}")
        log.info("Source %s listening on udp %s:%d.", self.name, self.config.bind, self.port)
        await super().start()

    async def stop(self) -> None:
        """Stop receiving, offer what is held to the channel once more, then stop."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._stopping.set()
        self._wakeup.set()
        task, self._task = self._task, None
        await stop_task(task, 10, who=f"Source {self.name}")
        if self._pending:
            log.error(
                "Source %s stopped with %d datagrams the channel did not accept; they are lost.",
                self.name,
                len(self._pending),
            )
            self.counter.EventDroppedCount += len(self._pending)
            self._pending = []
        await super().stop()

    # -- receiving (called by the protocol, on the loop) -------------------------------
    def _received(self, data: bytes, addr: tuple[Any, int]) -> None:
        counter = self.counter
        counter.EventReceivedCount += 1
        if len(self._pending) + self._inflight >= self.max_pending:
            counter.EventDroppedCount += 1
            self._dropped_since_log += 1
            self._log_drops()
            return
        if data.endswith(b"\n"):
            data = data[:-1]
        header = self.config.remoteAddressHeader
        event = Event(data, {header: f"/{addr[0]}:{addr[1]}"} if header else {})
        self._pending.append(event)
        self._wakeup.set()

    def _log_drops(self) -> None:
        now = time.monotonic()
        if self._last_drop_log is None or now - self._last_drop_log >= DROP_LOG_INTERVAL:
            self._last_drop_log = now
            log.warning(
                "Source %s: channel full and %d datagrams held; dropped %d datagrams "
                "(UDP cannot push back; %d dropped since start).",
                self.name,
                self.max_pending,
                self._dropped_since_log,
                self.counter.EventDroppedCount,
            )
            self._dropped_since_log = 0

    # -- committing --------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        """Commit what arrived since the last batch; hold and retry what was refused."""
        counter = self.counter
        delay = 0.1
        while True:
            if not self._pending:
                if self._stopping.is_set():
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch, self._pending = self._pending, []
            self._inflight = len(batch)
            counter.AppendBatchReceivedCount += 1
            try:
                await self.processor.process_batch(batch)
            except asyncio.CancelledError:
                self._pending[:0] = batch  # stop() counts them as lost
                self._inflight = 0
                raise
            except ChannelError as e:
                accepted = e.accepted if isinstance(e, ChannelFullError) else 0
                counter.ChannelWriteFail += 1
                counter.EventAcceptedCount += accepted
                # The refused events go back to the head, before newer datagrams.
                self._pending[:0] = batch[accepted:]
                self._inflight = 0
                self._refused_log.warn(
                    "Source %s: channel refused %d events; holding them: %s",
                    self.name,
                    len(batch) - accepted,
                    e,
                )
                if self._stopping.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, RETRY_BACKOFF_MAX)
                continue
            except Exception:  # noqa: BLE001 - logged with its traceback, counted
                # Not the channel (e.g. an interceptor failed on this input): retrying
                # would fail the same way, so the batch is dropped, counted and logged.
                self._inflight = 0
                counter.GenericProcessingFail += 1
                counter.EventDroppedCount += len(batch)
                self._error_log.log(
                    logging.ERROR,
                    "Source %s: dropped a batch of %d events (%d dropped since start).",
                    self.name,
                    len(batch),
                    counter.EventDroppedCount,
                    exc_info=True,
                )
                continue
            self._inflight = 0
            delay = 0.1
            counter.EventAcceptedCount += len(batch)
            counter.AppendBatchAcceptedCount += 1
