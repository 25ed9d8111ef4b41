"""Interceptor `timestamp`: the time the event was intercepted, in epoch milliseconds.

Keys as Flume's TimestampInterceptor: `headerName` ("timestamp"), `preserveExisting`
(false). The clock is read once per batch: the events of one batch arrived together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors.base import Interceptor


@dataclass(frozen=True, slots=True)
class TimestampConfig:
    headerName: str = key("timestamp")
    preserveExisting: bool = key(False)


class TimestampInterceptor(Interceptor):
    Config = TimestampConfig
    config: TimestampConfig

    def intercept(self, events: list[Event]) -> list[Event]:
        name = self.config.headerName
        now = str(time.time_ns() // 1_000_000)
        if self.config.preserveExisting:
            for e in events:
                e.headers.setdefault(name, now)
        else:
            for e in events:
                e.headers[name] = now
        return events
