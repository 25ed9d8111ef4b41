"""Components for the Kafka tests, loaded by agents through their class path.

`JsonLinesSink` writes each event as one JSON line (headers and body), flushed before
the take commits, so a test can read exactly what left the channel. `RouteInterceptor`
sets the `topic` and `key` headers from a numeric body, so events can be routed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors.base import Interceptor
from flumed.sinks.base import TAKE_TIMEOUT, Sink, Status


@dataclass(frozen=True, slots=True)
class JsonLinesSinkConfig:
    path: str = key()
    batchSize: int = key(1000, ge=1)
    delay: float = key(0.0, ge=0, doc="Seconds slept per batch (to fill the channel).")


class JsonLinesSink(Sink):
    Config = JsonLinesSinkConfig
    config: JsonLinesSinkConfig

    async def start(self) -> None:
        self._fh = open(self.config.path, "a", encoding="utf-8")  # noqa: SIM115
        await super().start()

    async def stop(self) -> None:
        self._fh.close()
        await super().stop()

    async def process(self) -> Status:
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(self.config.batchSize, TAKE_TIMEOUT)
            if not events:
                return Status.BACKOFF
            if self.config.delay:
                await asyncio.sleep(self.config.delay)
            self._fh.write(
                "".join(
                    json.dumps({"h": e.headers, "b": e.body.decode("utf-8", "replace")}) + "\n"
                    for e in events
                )
            )
            self._fh.flush()
        self.counter.EventDrainSuccessCount += len(events)
        return Status.READY


def read_json_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class RouteInterceptorConfig:
    topics: list[str] = key()
    keys: int = key(7, ge=1)


class RouteInterceptor(Interceptor):
    """Body `n` → header topic = topics[n % len(topics)], header key = f"k{n % keys}"."""

    Config = RouteInterceptorConfig
    config: RouteInterceptorConfig

    def intercept(self, events: list[Event]) -> list[Event]:
        topics = self.config.topics
        nk = self.config.keys
        for e in events:
            n = int(e.body)
            e.headers["topic"] = topics[n % len(topics)]
            e.headers["key"] = f"k{n % nk}"
        return events
