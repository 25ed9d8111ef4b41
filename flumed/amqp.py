"""What the `amqp` source and sink share: the broker connection keys and the connection.

Keys (beyond Flume, in the spelling of its other components): `url`
(`amqp://user:password@host:5672/vhost`, `amqps://` for TLS; default
`amqp://guest:guest@127.0.0.1:5672/`), `userName` / `passwordFile` (override the URL's
credentials; the password is read from a file, as Flume's JMS source does),
`exchange` (empty: the default exchange), `exchangeType` (direct, fanout, topic, headers),
`declare` (declare the exchange/queue, durable, at start; false: they must exist),
`ssl.truststore` (a PEM file of CA certificates for amqps), `connectTimeout` (ms).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flumed.config.keys import key

AMQP_TYPES = ("direct", "fanout", "topic", "headers")


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpKeys:
    """The connection keys, included by the source's and the sink's Config."""

    url: str = key("amqp://guest:guest@127.0.0.1:5672/", doc="Broker URL (amqp:// or amqps://).")
    userName: str = key("", doc="User (overrides the URL's).")
    passwordFile: str = key("", doc="File holding the password (overrides the URL's).")
    exchange: str = key("", doc="Exchange name; empty: the default exchange.")
    exchangeType: Literal["direct", "fanout", "topic", "headers"] = key("direct")
    declare: bool = key(True, doc="Declare the exchange and queue (durable) at start.")
    ssl_truststore: str = key("", name="ssl.truststore", doc="PEM CA file for amqps.")
    connectTimeout: int = key(10_000, ge=1, doc="Milliseconds to connect.")

    def amqp_problems(self) -> list[str]:
        if not self.url.startswith(("amqp://", "amqps://")):
            return [f"key 'url': expected amqp://... or amqps://..., got {self.url!r}"]
        return []


async def connect(keys: AmqpKeys, who: str) -> Any:
    """A robust connection (reconnects by itself after a broker restart).

    Raises:
        OSError, aio_pika.exceptions.AMQPError: the broker cannot be reached or refused.
    """
    import aio_pika
    import yarl

    url = yarl.URL(keys.url)
    if keys.userName:
        url = url.with_user(keys.userName)
    if keys.passwordFile:
        # A small local file, read once at start: not worth a thread.
        password = Path(keys.passwordFile).read_text(encoding="utf-8").strip()  # noqa: ASYNC240
        url = url.with_password(password)
    context = None
    if url.scheme == "amqps":
        context = ssl.create_default_context(cafile=keys.ssl_truststore or None)
    return await aio_pika.connect_robust(
        url,
        timeout=keys.connectTimeout / 1000,
        ssl_context=context,
        client_properties={"connection_name": who},
    )


def header_value(v: Any) -> str:
    """An AMQP field value as a Flume header string."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
