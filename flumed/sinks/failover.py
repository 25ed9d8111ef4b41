"""Sink processor `failover`: the healthy sink of highest priority delivers.

Keys (under `processor.`): `priority.<sink>` (higher wins), `maxpenalty` (ms).
A failed sink is set aside for min(maxpenalty, 2^failures * 1 s), then tried again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import key, prefix
from flumed.errors import DeliveryError, FlumedError
from flumed.sinks.base import Sink, Status
from flumed.sinks.runner import Penalties, SinkProcessor


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    type: Literal["failover"] = key("failover")
    priority: dict[str, Any] = prefix("priority")
    maxpenalty: int = key(30000, ge=0)


class FailoverSinkProcessor(SinkProcessor):
    Config = FailoverConfig
    config: FailoverConfig

    def __init__(self, name: str, sinks: Sequence[Sink], config: FailoverConfig) -> None:
        super().__init__(name, sinks, config)
        prio: dict[str, int] = {}
        for s in sinks:
            raw = config.priority.get(s.name, 0)
            try:
                prio[s.name] = int(raw)
            except ValueError:
                prio[s.name] = 0
        # Highest priority first; ties keep declaration order.
        self._order = sorted(self.sinks, key=lambda s: -prio[s.name])
        self._penalties = Penalties(sinks, config.maxpenalty / 1000)

    @property
    def active(self) -> Sink | None:
        now = time.monotonic()
        for s in self._order:
            if self._penalties.available(s, now):
                return s
        return None

    async def process(self) -> Status:
        now = time.monotonic()
        errors: list[str] = []
        for s in self._order:
            if not self._penalties.available(s, now):
                continue
            try:
                status = await s.process()
            except FlumedError as e:
                self._penalties.failed(s)
                errors.append(f"{s.name}: {e}")
                continue
            self._penalties.succeeded(s)
            return status
        raise DeliveryError(
            f"All sinks of group {self.name} failed or are penalised: " + "; ".join(errors)
            if errors
            else f"All sinks of group {self.name} are penalised."
        )
