"""Interceptor `static`: a fixed header on every event.

Keys as Flume's StaticInterceptor: `key` ("key"), `value` ("value"),
`preserveExisting` (true).
"""

from __future__ import annotations

from dataclasses import dataclass

from flumed.config import keys
from flumed.event import Event
from flumed.interceptors.base import Interceptor


@dataclass(frozen=True, slots=True)
class StaticConfig:
    # `keys.key`, not `key`: the field named `key` would shadow it in the class body.
    key: str = keys.key("key")
    value: str = keys.key("value")
    preserveExisting: bool = keys.key(True)


class StaticInterceptor(Interceptor):
    Config = StaticConfig
    config: StaticConfig

    def intercept(self, events: list[Event]) -> list[Event]:
        k, v = self.config.key, self.config.value
        if self.config.preserveExisting:
            for e in events:
                e.headers.setdefault(k, v)
        else:
            for e in events:
                e.headers[k] = v
        return events
