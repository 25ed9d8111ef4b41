"""Components that fail in ways a plugin can: a constructor or a start() raising an
unexpected exception. Used through class-path types, to show a reload survives them."""

from __future__ import annotations

from dataclasses import dataclass

from flumed.config.keys import key
from flumed.sources.base import Source


@dataclass(frozen=True, slots=True)
class BrokenConfig:
    why: str = key("boom")


class BrokenInitSource(Source):
    """Raises RuntimeError when constructed."""

    Config = BrokenConfig

    def __init__(self, name: str, config: BrokenConfig) -> None:
        raise RuntimeError(f"BrokenInitSource {name}: {config.why}")


class BrokenStartSource(Source):
    """Raises RuntimeError from start()."""

    Config = BrokenConfig

    async def start(self) -> None:
        raise RuntimeError(f"BrokenStartSource {self.name}: {self.config.why}")
