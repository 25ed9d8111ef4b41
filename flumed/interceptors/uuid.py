"""Interceptor `uuid`: a random UUID per event (Flume's morphline UUIDInterceptor).

Keys: `headerName` ("id"), `preserveExisting` (true), `prefix` ("").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors.base import Interceptor


@dataclass(frozen=True, slots=True)
class UUIDConfig:
    headerName: str = key("id")
    preserveExisting: bool = key(True)
    prefix: str = key("")


class UUIDInterceptor(Interceptor):
    Config = UUIDConfig
    config: UUIDConfig

    def intercept(self, events: list[Event]) -> list[Event]:
        name, prefix = self.config.headerName, self.config.prefix
        uuid4 = uuid.uuid4
        preserve = self.config.preserveExisting
        for e in events:
            h = e.headers
            if not (preserve and name in h):
                h[name] = f"{prefix}{uuid4()}"
        return events
