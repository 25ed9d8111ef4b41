"""Source `amqp` (beyond Flume; Vector and Logstash have one): consumes a RabbitMQ (AMQP
0-9-1) queue, acknowledging messages only after the channel commit.

Keys: the connection keys of `flumed.amqp` (`url`, `userName`, `passwordFile`, `exchange`,
`exchangeType`, `declare`, `ssl.truststore`, `connectTimeout`), plus `queue` (required),
`routingKey` (binding of the queue to `exchange`; several separated by spaces),
`batchSize` (100), `batchDurationMillis` (1000: a partial batch goes after this long),
`prefetch` (unacknowledged messages the broker may send ahead; default 2 x batchSize).

Delivery: messages are collected into a batch; the batch is committed to the channels,
then acknowledged with one `basic.ack(multiple)`. A full channel holds the batch and
offers it again (the broker stops sending at `prefetch` unacknowledged messages: that is
the push-back). A crash or a dropped connection leaves the batch unacknowledged and the
broker redelivers it: duplicates are bounded by `prefetch`, nothing is lost.

Headers: the message's AMQP headers, plus `amqp.exchange`, `amqp.routingKey`,
`amqp.redelivered` and, where set, `amqp.contentType`, `amqp.messageId`,
`amqp.correlationId`, `amqp.appId`, `amqp.timestamp` (ms since the epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from flumed.amqp import AmqpKeys, connect, header_value
from flumed.config.keys import key
from flumed.errors import ChannelError, ComponentStartError
from flumed.event import Event
from flumed.lifecycle import LifecycleState, stop_task
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source

log = logging.getLogger("flumed.sources.amqp")


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpSourceConfig(AmqpKeys):
    queue: str = key(doc="The queue to consume.")
    routingKey: str = key("", doc="Binding keys of the queue to `exchange` (space-separated).")
    batchSize: int = key(100, ge=1, doc="Messages per channel transaction.")
    batchDurationMillis: int = key(1000, ge=1, doc="Milliseconds before a partial batch goes.")
    prefetch: int = key(0, ge=0, doc="Unacknowledged messages in flight (0: 2 x batchSize).")

    def check(self) -> list[str]:
        return self.amqp_problems()


def to_event(message: Any) -> Event:
    headers = {k: header_value(v) for k, v in (message.headers or {}).items()}
    headers["amqp.exchange"] = message.exchange or ""
    headers["amqp.routingKey"] = message.routing_key or ""
    headers["amqp.redelivered"] = "true" if message.redelivered else "false"
    for name, value in (
        ("amqp.contentType", message.content_type),
        ("amqp.messageId", message.message_id),
        ("amqp.correlationId", message.correlation_id),
        ("amqp.appId", message.app_id),
    ):
        if value:
            headers[name] = str(value)
    if message.timestamp is not None:
        headers["amqp.timestamp"] = str(int(message.timestamp.timestamp() * 1000))
    return Event(message.body, headers)


class AmqpSource(Source):
    """Consumes `queue`; see the module docstring for the delivery contract."""

    Config = AmqpSourceConfig
    config: AmqpSourceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._buffer: list[Any] = []
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None
        # One limiter per distinct warning: a flood of one must not hide another.
        self._warn_refused = RateLimitedLog(log)
        self._warn_ack = RateLimitedLog(log)

    async def start(self) -> None:
        cfg = self.config
        try:
            self._connection = await connect(cfg, f"flumed source {self.name}")
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=cfg.prefetch or 2 * cfg.batchSize)
            if cfg.declare:
                queue = await channel.declare_queue(cfg.queue, durable=True)
            else:
                queue = await channel.get_queue(cfg.queue, ensure=True)
            if cfg.exchange:
                if cfg.declare:
                    exchange = await channel.declare_exchange(
                        cfg.exchange, cfg.exchangeType, durable=True
                    )
                else:
                    exchange = await channel.get_exchange(cfg.exchange, ensure=True)
                for rk in cfg.routingKey.split() or [""]:
                    await queue.bind(exchange, rk)
            await queue.consume(self._on_message, no_ack=False)
        except Exception as e:  # noqa: BLE001 - any failure to set up is a start error
            if self._connection is not None:
                await self._connection.close()
            raise ComponentStartError(
                f"source {self.name}: cannot consume queue {cfg.queue!r} at {cfg.url}: {e}"
            ) from None
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"source-{self.name}")
        await super().start()

    async def _on_message(self, message: Any) -> None:
        """Called by the AMQP client for each delivery: only collects it."""
        self._buffer.append(message)
        if len(self._buffer) >= self.config.batchSize:
            self._arrived.set()

    async def _run(self) -> None:
        cfg = self.config
        while not self._stopping.is_set():
            if len(self._buffer) < cfg.batchSize:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), cfg.batchDurationMillis / 1000)
            self._arrived.clear()
            if not self._buffer:
                continue
            batch, self._buffer = self._buffer[: cfg.batchSize], self._buffer[cfg.batchSize :]
            if await self._commit(batch):
                await self._ack(batch[-1])

    async def _commit(self, batch: list[Any]) -> bool:
        events = [to_event(m) for m in batch]
        self.counter.EventReceivedCount += len(events)
        self.counter.AppendBatchReceivedCount += 1

        def refused(e: ChannelError, left: int) -> None:
            self._warn_refused.warn(
                "Source %s: channel refused a batch, holding it: %s", self.name, e
            )

        return await self.deliver(events, self._stopping, refused, max_backoff=1.0)

    async def _ack(self, last: Any) -> None:
        try:
            await last.ack(multiple=True)
        except Exception as e:  # noqa: BLE001 - any failure: the broker redelivers
            # The connection dropped since delivery: the broker redelivers these messages
            # (already committed: bounded duplicates, never a loss).
            self.counter.GenericProcessingFail += 1
            self._warn_ack.warn("Source %s: acknowledging failed (will be redelivered): %s",
                            self.name, e)  # fmt: skip

    async def stop(self) -> None:
        self._stopping.set()
        self._arrived.set()
        error = await stop_task(self._task, 10.0, who=f"Source {self.name}")
        if error is not None:
            self.state = LifecycleState.FAILED
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
        await super().stop()
