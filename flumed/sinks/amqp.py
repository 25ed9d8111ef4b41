"""Sink `amqp` (beyond Flume; Vector and Logstash have one): publishes each event as a
message to a RabbitMQ (AMQP 0-9-1) exchange, with publisher confirms.

Keys: the connection keys of `flumed.amqp` (`url`, `userName`, `passwordFile`, `exchange`,
`exchangeType`, `declare`, `ssl.truststore`, `connectTimeout`), plus `routingKey`
(default ""), `routingKeyHeader` (an event header whose value, when present, is the
routing key), `mandatory` (false: a message no queue takes is returned, and the batch
rolls back), `persistent` (true: delivery mode 2), `batchSize` (100), `requestTimeout`
(ms to wait for the confirms of a batch).

The take commits only when the broker confirmed every message of the batch; a nack, a
return (with `mandatory`), a timeout or a lost connection rolls the batch back (the
messages confirmed before are sent again: duplicates bounded by a batch). Event headers
become the message's AMQP headers.

The AMQP client (aio-pika on aiormq) awaits the confirm of each publish in its own call,
so a batch is published as one `gather` of its messages: they travel pipelined and the
confirms are awaited together, at the cost of one task per message inside the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from flumed.amqp import AmqpKeys, connect
from flumed.config.keys import key
from flumed.errors import ComponentStartError, DeliveryError
from flumed.event import Event
from flumed.sinks.base import BatchSink

log = logging.getLogger("flumed.sinks.amqp")


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpSinkConfig(AmqpKeys):
    routingKey: str = key("", doc="Routing key of every message.")
    routingKeyHeader: str = key("", doc="Header whose value is the routing key, when set.")
    mandatory: bool = key(False, doc="Roll back when no queue takes a message.")
    persistent: bool = key(True, doc="Delivery mode 2 (kept on the broker's disk).")
    batchSize: int = key(100, ge=1, doc="Events per transaction.")
    requestTimeout: int = key(20_000, ge=1, doc="Milliseconds to wait for a batch's confirms.")

    def check(self) -> list[str]:
        return self.amqp_problems()


class AmqpSink(BatchSink):
    """Publishes batches; see the module docstring for the delivery contract."""

    Config = AmqpSinkConfig
    config: AmqpSinkConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._connection: Any = None
        self._exchange: Any = None

    async def start(self) -> None:
        cfg = self.config
        try:
            self._connection = await connect(cfg, f"flumed sink {self.name}")
            channel = await self._connection.channel(publisher_confirms=True)
            if not cfg.exchange:
                self._exchange = channel.default_exchange
            elif cfg.declare:
                self._exchange = await channel.declare_exchange(
                    cfg.exchange, cfg.exchangeType, durable=True
                )
            else:
                self._exchange = await channel.get_exchange(cfg.exchange, ensure=True)
        except Exception as e:  # noqa: BLE001 - any failure to set up is a start error
            if self._connection is not None:
                await self._connection.close()
            raise ComponentStartError(
                f"sink {self.name}: cannot publish to {cfg.url}: {e}"
            ) from None
        self.counter.ConnectionCreatedCount += 1
        await super().start()

    def _message(self, e: Event) -> tuple[Any, str]:
        import aio_pika

        cfg = self.config
        rk = (
            e.headers.get(cfg.routingKeyHeader, cfg.routingKey)
            if cfg.routingKeyHeader
            else cfg.routingKey
        )
        mode = (
            aio_pika.DeliveryMode.PERSISTENT
            if cfg.persistent
            else aio_pika.DeliveryMode.NOT_PERSISTENT
        )
        return aio_pika.Message(e.body, headers=dict(e.headers), delivery_mode=mode), rk

    async def deliver(self, events: list[Event]) -> None:
        import aio_pika.exceptions as amqp_errors

        cfg = self.config
        publish = self._exchange.publish
        calls = [publish(m, rk, mandatory=cfg.mandatory) for m, rk in map(self._message, events)]
        try:
            async with asyncio.timeout(cfg.requestTimeout / 1000):
                results = await asyncio.gather(*calls, return_exceptions=True)
        except TimeoutError:
            self.counter.EventWriteFail += 1
            raise DeliveryError(
                f"AMQP sink {self.name}: no confirms for a batch of {len(events)} "
                f"within {cfg.requestTimeout} ms"
            ) from None
        failed = [r for r in results if isinstance(r, BaseException)]
        returned = sum(1 for r in results if r is not None and not isinstance(r, BaseException)
                       and type(r).__name__ == "DeliveredMessage")  # fmt: skip
        if failed or returned:
            self.counter.EventWriteFail += 1
            lost = (amqp_errors.AMQPConnectionError, amqp_errors.ChannelInvalidStateError, OSError)
            if any(isinstance(f, lost) for f in failed):
                self.counter.ConnectionFailedCount += 1
            what = f"{len(failed)} not confirmed ({failed[0]!r})" if failed else ""
            if returned:
                what += (", " if what else "") + f"{returned} returned as unroutable"
            raise DeliveryError(f"AMQP sink {self.name}: of a batch of {len(events)}, {what}")

    async def stop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
            self.counter.ConnectionClosedCount += 1
        await super().stop()
