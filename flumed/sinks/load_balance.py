"""Sink processor `load_balance`: spread batches over sinks, round_robin or random.

Keys (under `processor.`): `selector` (round_robin | random), `backoff` (set failed
sinks aside with exponential backoff), `selector.maxTimeOut` (ms, the backoff cap).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from flumed.config.keys import key
from flumed.errors import DeliveryError, FlumedError
from flumed.sinks.base import Sink, Status
from flumed.sinks.runner import Penalties, SinkProcessor

log = logging.getLogger("flumed.sinks")


@dataclass(frozen=True, slots=True)
class LoadBalanceConfig:
    type: Literal["load_balance"] = key("load_balance")
    selector: Literal["round_robin", "random"] = key("round_robin")
    backoff: bool = key(False)
    maxTimeOut: int = key(30000, name="selector.maxTimeOut", aliases=("maxTimeOut",), ge=0)


class LoadBalancingSinkProcessor(SinkProcessor):
    Config = LoadBalanceConfig
    config: LoadBalanceConfig

    def __init__(self, name: str, sinks: Sequence[Sink], config: LoadBalanceConfig) -> None:
        super().__init__(name, sinks, config)
        self._next = 0
        self._penalties = Penalties(sinks, config.maxTimeOut / 1000, group=name)

    def _order(self) -> list[Sink]:
        if self.config.selector == "random":
            order = list(self.sinks)
            random.shuffle(order)
        else:
            i = self._next % len(self.sinks)
            self._next = i + 1
            order = self.sinks[i:] + self.sinks[:i]
        if self.config.backoff:
            now = time.monotonic()
            order = [s for s in order if self._penalties.available(s, now)]
        return order

    async def process(self) -> Status:
        errors: list[str] = []
        for s in self._order():
            try:
                status = await s.process()
            except FlumedError as e:
                errors.append(f"{s.name}: {e}")
                if self.config.backoff:
                    self._penalties.failed(s, e)
                else:
                    log.warning("Sink group %s: sink %s failed, trying the next: %s",
                                self.name, s.name, e)  # fmt: skip
                continue
            self._penalties.succeeded(s)
            return status
        raise DeliveryError(
            f"All sinks of group {self.name} failed: " + "; ".join(errors)
            if errors
            else f"All sinks of group {self.name} are backed off."
        )

    def problems(self) -> list[tuple[str, float]]:
        """For /health: sinks of the group set aside (backoff) after failing."""
        return [
            (f"sink {name} is failing and backed off: {cause}", since)
            for name, cause, since in self._penalties.backing_off()
        ]
