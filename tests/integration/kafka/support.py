"""Components for the Kafka tests, loaded by agents through their class path.

`JsonLinesSink` is the recording sink of tests/support writing each event as one JSON
line (headers and body), flushed before the take commits. `RouteInterceptor`
sets the `topic` and `key` headers from a numeric body, so events can be routed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors.base import Interceptor
from tests.support.record_sink import RecordSink, RecordSinkConfig


@dataclass(frozen=True)
class JsonLinesSinkConfig(RecordSinkConfig):
    batchSize: int = key(1000, ge=1)
    format: Literal["lines", "json"] = key("json")


class JsonLinesSink(RecordSink):
    """tests.support.record_sink's RecordSink, writing JSON lines by default."""

    Config = JsonLinesSinkConfig


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
