"""Serializer `header_and_text`: `{k=v, k2=v2} body` per line (Flume's
HeaderAndBodyTextEventSerializer).

The headers are printed as Java's `Map.toString()` does: `{}` when empty, otherwise
`{k=v, k2=v2}` with nothing escaped, followed by a space, the body and (with
`appendNewline`, default true) a newline. Headers appear in their insertion order,
where Java's HashMap order is unspecified.
"""

from __future__ import annotations

from dataclasses import dataclass

from flumed.config.keys import key
from flumed.event import Event
from flumed.serializers.base import EventSerializer


@dataclass(frozen=True, slots=True)
class HeaderAndTextConfig:
    appendNewline: bool = key(True)


def java_map_string(headers: dict[str, str]) -> str:
    """Java's AbstractMap.toString: `{k=v, k2=v2}`."""
    return "{" + ", ".join([f"{k}={v}" for k, v in headers.items()]) + "}"


class HeaderAndTextSerializer(EventSerializer):
    Config = HeaderAndTextConfig
    config: HeaderAndTextConfig

    def serialize(self, events: list[Event]) -> bytes:
        end = b"\n" if self.config.appendNewline else b""
        # Events of one batch often share their headers: render each distinct set once.
        cache: dict[tuple[tuple[str, str], ...], bytes] = {}
        parts: list[bytes] = []
        for e in events:
            hk = tuple(e.headers.items())
            prefix = cache.get(hk)
            if prefix is None:
                prefix = cache[hk] = (java_map_string(e.headers) + " ").encode(
                    "utf-8", "surrogateescape"
                )
            parts.append(prefix)
            parts.append(e.body)
            parts.append(end)
        return b"".join(parts)
