"""The component base: a name, a state, start() and stop()."""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class LifecycleState(enum.Enum):
    IDLE = "IDLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class Component:
    """Base of sources, channels and sinks.

    The agent calls `start()` once, then `stop()` once; `stop()` must be idempotent
    and safe to call after a failed start. A component that owns tasks keeps them
    and awaits them in `stop()`.
    """

    #: The dataclass of this component's keys (see flumed.config.keys).
    Config: ClassVar[type]
    #: One line for `flumed validate --list-types`.
    description: ClassVar[str] = ""

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        self.state = LifecycleState.IDLE

    async def start(self) -> None:
        """Called by the agent. Raises on failure (bind error, unreadable file ...)."""
        self.state = LifecycleState.RUNNING

    async def stop(self) -> None:
        """Called by the agent. Idempotent."""
        self.state = LifecycleState.STOPPED

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.state.value})"
