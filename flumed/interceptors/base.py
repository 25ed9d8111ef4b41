"""The interceptor contract."""

from __future__ import annotations

from typing import Any, ClassVar

from flumed.event import Event


class Interceptor:
    """Transforms a batch in place or returns a filtered list.

    Called by the ChannelProcessor of its source, once per batch, on the event loop:
    it must not block. It may drop events by leaving them out of the returned list.
    """

    Config: ClassVar[type]

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    def intercept(self, events: list[Event]) -> list[Event]:
        raise NotImplementedError
