"""Source `jms` (Flume's org.apache.flume.source.jms.JMSSource), spoken over STOMP 1.2.

Python has no JMS client; ActiveMQ, Artemis and RabbitMQ all serve STOMP, so `providerURL`
is `stomp://host:61613` (or `stomp+ssl://host:61614`; a path names a RabbitMQ virtual
host: `stomp://host:61613/logs`). A Flume `tcp://host:61616`
(OpenWire) URL is refused with a message naming the STOMP port to use.

Keys as Flume's: `providerURL`, `destinationName`, `destinationType` (QUEUE | TOPIC),
`messageSelector` (sent as the broker's `selector` header: ActiveMQ and Artemis apply it;
RabbitMQ has no selectors and delivers everything), `userName`, `passwordFile`,
`batchSize` (100), `pollTimeout` (1000 ms: a partial batch goes after this long),
`converter.type` (DEFAULT), `converter.charset` (UTF-8), `createDurableSubscription`,
`durableSubscriptionName`, `clientId`; `initialContextFactory`, `connectionFactory` and
`connectionFactory.*` are accepted with a warning. flumed's own: `prefetch` (messages the
broker may send unacknowledged; default 2 x batchSize), `ssl.truststore` (PEM CA file).

The DEFAULT converter, as Flume's: a text message (no `content-length`, or a `text/*`
content type) becomes its text in `converter.charset`; a bytes message its bytes; the
message's properties (every header that is not a STOMP or JMS standard one) become
headers.

Delivery: `ack: client-individual`; a batch is acknowledged (one write of ACK frames) only
after the channel commit. A full channel stops the source reading (the broker stops at
`prefetch` unacknowledged messages). A broker restart or a lost connection: reconnect with
backoff, subscribe again; the unacknowledged messages come back (duplicates bounded by
`prefetch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from flumed.config.keys import ignored, key, prefix
from flumed.errors import ChannelError, ComponentStartError
from flumed.event import Event
from flumed.lifecycle import Backoff, LifecycleState, stop_task
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source
from flumed.stomp import Frame, StompConnection, StompError

log = logging.getLogger("flumed.sources.jms")

#: STOMP and JMS standard headers: not message properties, so not event headers.
STANDARD_HEADERS = frozenset(
    {
        "destination", "message-id", "subscription", "ack", "content-length",
        "content-type", "timestamp", "expires", "priority", "persistent", "redelivered",
        "correlation-id", "reply-to", "type", "receipt", "receipt-id", "message",
        "JMSXDeliveryCount", "JMSXGroupID", "JMSXGroupSeq", "JMSXUserID",
        "redelivery_count", "x-queue-name", "original-destination",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JMSSourceConfig:
    providerURL: str = key(doc="stomp://host:61613 or stomp+ssl://host:61614.")
    destinationName: str = key(doc="The queue or topic.")
    destinationType: Literal["QUEUE", "TOPIC"] = key("QUEUE")
    messageSelector: str = key("", doc="A JMS selector (ActiveMQ, Artemis).")
    userName: str = key("")
    passwordFile: str = key("", doc="File holding the password.")
    batchSize: int = key(100, ge=1, doc="Messages per channel transaction.")
    pollTimeout: int = key(1000, ge=1, doc="Milliseconds before a partial batch goes.")
    converter_type: str = key("DEFAULT", name="converter.type")
    converter_charset: str = key("UTF-8", name="converter.charset")
    createDurableSubscription: bool = key(False, doc="A durable topic subscription.")
    durableSubscriptionName: str = key("", doc="Its name (required when durable).")
    clientId: str = key("", doc="The connection's client id (durable subscriptions).")
    prefetch: int = key(0, ge=0, doc="flumed: unacknowledged messages (0: 2 x batchSize).")
    ssl_truststore: str = key("", name="ssl.truststore", doc="flumed: PEM CA file.")
    connectionFactory: dict[str, Any] = prefix("connectionFactory", doc="Accepted; ignored.")

    IGNORED = ignored("initialContextFactory")

    def check(self) -> list[str]:
        problems = []
        url = urlsplit(self.providerURL)
        if url.scheme in ("tcp", "ssl", "nio", "failover", "vm", "amqp"):
            problems.append(
                f"key 'providerURL': {self.providerURL} is JMS's Java protocol (OpenWire); "
                f"flumed speaks STOMP: use stomp://{url.hostname or 'broker'}:61613 "
                "(ActiveMQ's stomp transport connector, RabbitMQ's rabbitmq_stomp plugin)"
            )
        elif url.scheme not in ("stomp", "stomp+ssl", "stomp+nio") or not url.hostname:
            problems.append(
                f"key 'providerURL': expected stomp://HOST:PORT, got {self.providerURL!r}"
            )
        if self.converter_type.upper() != "DEFAULT":
            problems.append(
                f"key 'converter.type': only DEFAULT exists in flumed, got {self.converter_type!r}"
            )
        try:
            "".encode(self.converter_charset)
        except LookupError:
            problems.append(f"key 'converter.charset': unknown charset {self.converter_charset!r}")
        if self.createDurableSubscription and not self.durableSubscriptionName:
            problems.append("createDurableSubscription needs durableSubscriptionName")
        if self.createDurableSubscription and self.destinationType != "TOPIC":
            problems.append("createDurableSubscription applies to destinationType = TOPIC")
        if self.connectionFactory:
            log.warning("Keys connectionFactory.* have no meaning in flumed (STOMP).")
        return problems


def to_event(frame: Frame, charset: str) -> Event:
    h = frame.headers
    body = frame.body
    ctype = h.get("content-type", "")
    if ("content-length" not in h or ctype.startswith("text/")) and charset.lower() not in (
        "utf-8",
        "utf8",
    ):
        body = body.decode("utf-8", "replace").encode(charset, "replace")
    return Event(body, {k: v for k, v in h.items() if k not in STANDARD_HEADERS})


class JMSSource(Source):
    """Consumes one destination over STOMP; see the module docstring."""

    Config = JMSSourceConfig
    config: JMSSourceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        url = urlsplit(config.providerURL)
        self.host = url.hostname or "localhost"
        self.port = url.port or (61614 if "ssl" in url.scheme else 61613)
        self.tls = "ssl" in url.scheme
        # stomp://host:61613/vhost names a RabbitMQ virtual host (default "/").
        self.virtual_host = unquote(url.path[1:]) if len(url.path) > 1 else "/"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: StompConnection | None = None
        # One limiter per distinct warning: a flood of one must not hide another.
        self._warn_broker = RateLimitedLog(log)
        self._warn_lost = RateLimitedLog(log)
        self._warn_refused = RateLimitedLog(log)
        self._buffer: list[Frame] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._early: list[Frame] = []

    @property
    def prefetch(self) -> int:
        return self.config.prefetch or 2 * self.config.batchSize

    @property
    def destination(self) -> str:
        kind = "queue" if self.config.destinationType == "QUEUE" else "topic"
        return f"/{kind}/{self.config.destinationName}"

    async def _open(self) -> StompConnection:
        cfg = self.config
        context = (
            ssl.create_default_context(cafile=cfg.ssl_truststore or None) if self.tls else None
        )
        password = ""
        if cfg.passwordFile:
            # A small local file, read at (re)connect: not worth a thread.
            password = Path(cfg.passwordFile).read_text(encoding="utf-8").strip()  # noqa: ASYNC240
        conn = StompConnection(
            self.host, self.port, ssl_context=context, virtual_host=self.virtual_host
        )
        await conn.connect(cfg.userName, password, cfg.clientId)
        headers = {
            "id": cfg.durableSubscriptionName or f"flumed-{self.name}",
            "destination": self.destination,
            "ack": "client-individual",
            "activemq.prefetchSize": str(self.prefetch),
            "prefetch-count": str(self.prefetch),
        }
        if cfg.messageSelector:
            headers["selector"] = cfg.messageSelector
        if cfg.createDurableSubscription:
            headers["activemq.subscriptionName"] = cfg.durableSubscriptionName
            headers["durable"] = "true"
            headers["auto-delete"] = "false"
        # With a receipt: the subscription is active at the broker when `_open` returns
        # (a topic message published right after start is not missed).
        headers["receipt"] = "flumed-subscribed"
        conn.send_frame("SUBSCRIBE", headers)
        await conn.drain()
        early: list[Frame] = []
        async with asyncio.timeout(30):
            while True:
                frame = await conn.read()
                if frame.command == "RECEIPT":
                    break
                if frame.command == "MESSAGE":
                    early.append(frame)  # delivered before the receipt: kept, in order
        self._early = early
        return conn

    async def start(self) -> None:
        try:
            self._conn = await self._open()
        except (OSError, StompError, TimeoutError, ssl.SSLError) as e:
            raise ComponentStartError(
                f"source {self.name}: cannot subscribe to {self.destination} at "
                f"{self.config.providerURL}: {e}"
            ) from None
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"source-{self.name}")
        await super().start()

    async def _run(self) -> None:
        backoff = Backoff(1.0, 30.0)
        while not self._stopping.is_set():
            if self._conn is None:
                try:
                    self._conn = await self._open()
                    log.info("Source %s: subscribed again to %s.", self.name, self.destination)
                    backoff.reset()
                    self.clear_problem("broker")
                except (OSError, StompError, TimeoutError, ssl.SSLError) as e:
                    self.report_problem(f"cannot reach the broker: {e}", "broker")
                    self._warn_broker.warn("Source %s: cannot reach the broker: %s", self.name, e)
                    await backoff.wait(self._stopping)
                    continue
            try:
                await self._session(self._conn)
            except (OSError, StompError, ssl.SSLError) as e:
                self.counter.GenericProcessingFail += 1
                self._warn_lost.warn(
                    "Source %s: connection lost (%s); unacknowledged messages come back.",
                    self.name,
                    e,
                )
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def _read_loop(self, conn: StompConnection) -> None:
        """Reads MESSAGE frames into the buffer, never more than `prefetch` ahead."""
        while True:
            while len(self._buffer) >= self.prefetch:
                self._room.clear()
                await self._room.wait()
            frame = await conn.read()
            if frame.command == "MESSAGE":
                self._buffer.append(frame)
                if len(self._buffer) >= self.config.batchSize:
                    self._arrived.set()

    async def _session(self, conn: StompConnection) -> None:
        cfg = self.config
        self._buffer, self._early = self._early, []
        reader = asyncio.create_task(self._read_loop(conn), name=f"source-{self.name}-reader")
        try:
            while not self._stopping.is_set():
                if len(self._buffer) < cfg.batchSize:
                    waiter = asyncio.ensure_future(self._arrived.wait())
                    stop = asyncio.ensure_future(self._stopping.wait())
                    await asyncio.wait(
                        {waiter, reader, stop},
                        timeout=cfg.pollTimeout / 1000,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    waiter.cancel()
                    stop.cancel()
                self._arrived.clear()
                if reader.done():
                    reader.result()  # raises what ended the connection
                if not self._buffer or self._stopping.is_set():
                    continue
                batch = self._buffer[: cfg.batchSize]
                del self._buffer[: cfg.batchSize]
                self._room.set()
                if not await self._commit(batch):
                    return  # stopping with the channel refusing: left unacknowledged
                conn.ack_all([f.headers.get("ack") or f.headers["message-id"] for f in batch])
                await conn.drain()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, StompError, OSError):
                await reader

    async def _commit(self, batch: list[Frame]) -> bool:
        charset = self.config.converter_charset
        events = [to_event(f, charset) for f in batch]
        self.counter.EventReceivedCount += len(events)
        self.counter.AppendBatchReceivedCount += 1

        def refused(e: ChannelError, left: int) -> None:
            self._warn_refused.warn(
                "Source %s: channel refused a batch, holding it: %s", self.name, e
            )

        return await self.deliver(events, self._stopping, refused)

    async def stop(self) -> None:
        self._stopping.set()
        self._room.set()
        if await stop_task(self._task, 10.0, who=f"Source {self.name}") is not None:
            self.state = LifecycleState.FAILED
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        await super().stop()
