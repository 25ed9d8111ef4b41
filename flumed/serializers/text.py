"""Serializer `text`: the body, then a newline (Flume's BodyTextEventSerializer).

Key: `appendNewline` (true).
"""

from __future__ import annotations

from dataclasses import dataclass

from flumed.config.keys import key
from flumed.event import Event
from flumed.serializers.base import EventSerializer


@dataclass(frozen=True, slots=True)
class TextConfig:
    appendNewline: bool = key(True)


class TextSerializer(EventSerializer):
    Config = TextConfig
    config: TextConfig

    def serialize(self, events: list[Event]) -> bytes:
        if not events:
            return b""
        if self.config.appendNewline:
            return b"\n".join([e.body for e in events]) + b"\n"
        return b"".join([e.body for e in events])
