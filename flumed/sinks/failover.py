"""Sink processor `failover`: the healthy sink of highest priority delivers.

Keys (under `processor.`): `priority.<sink>` (higher wins), `maxpenalty` (ms).
A failed sink is set aside for min(maxpenalty, 2^failures * 1 s), then tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import key, prefix
from flumed.errors import DeliveryError, FlumedError
from flumed.sinks.base import Sink, Status
from flumed.sinks.runner import Penalties, SinkProcessor

log = logging.getLogger("flumed.sinks")


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
        self._penalties = Penalties(sinks, config.maxpenalty / 1000, group=name)
        # The sink that delivered last; the preferred one until something delivers.
        self._current: str | None = self._order[0].name if self._order else None

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
                self._penalties.failed(s, e)
                errors.append(f"{s.name}: {e}")
                continue
            self._penalties.succeeded(s)
            self._switched_to(s, errors)
            return status
        raise DeliveryError(
            f"All sinks of group {self.name} failed or are penalised: " + "; ".join(errors)
            if errors
            else f"All sinks of group {self.name} are penalised."
        )

    def _switched_to(self, sink: Sink, errors: list[str]) -> None:
        """Log a failover (to a lower-priority sink) and the return to the preferred one."""
        previous, self._current = self._current, sink.name
        if previous is None or previous == sink.name:
            return
        rank = {s.name: i for i, s in enumerate(self._order)}
        if rank[sink.name] > rank[previous]:
            log.warning(
                "Sink group %s: failed over from sink %s to sink %s: %s",
                self.name,
                previous,
                sink.name,
                "; ".join(errors) or "it is backing off",
            )
        elif sink.name == self._order[0].name:
            log.info("Sink group %s: back on sink %s, its preferred sink.", self.name, sink.name)
        else:
            log.info("Sink group %s: moved up from sink %s to sink %s.", self.name, previous,
                     sink.name)  # fmt: skip

    def problems(self) -> list[tuple[str, float]]:
        """For /health: the group runs on a sink below its preferred one (or on none)."""
        failing = {name: (cause, since) for name, cause, since in self._penalties.backing_off()}
        if not failing:
            return []
        preferred = self._order[0].name
        since = min(t for _, t in failing.values())
        if len(failing) == len(self._order):
            return [(f"every sink is failing ({preferred}: {failing[preferred][0]})", since)]
        if preferred not in failing:
            return []
        current = self._current or "?"
        last = " (its last sink)" if current == self._order[-1].name else ""
        return [
            (
                f"running on sink {current}{last}; preferred sink {preferred} is failing: "
                f"{failing[preferred][0]}",
                failing[preferred][1],
            )
        ]
