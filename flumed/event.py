"""The one thing that travels: string headers and a bytes body."""

from __future__ import annotations


class Event:
    """A Flume event. Headers are str → str; the body is bytes.

    Kept a bare slotted class: sources build millions a second, so construction
    must stay a single cheap call. Events hold no references to other objects
    that could form cycles.
    """

    __slots__ = ("body", "headers")

    def __init__(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.headers = {} if headers is None else headers

    def __repr__(self) -> str:
        return f"Event(headers={self.headers!r}, body={self.body[:64]!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.body == other.body and self.headers == other.headers

    __hash__ = None  # type: ignore[assignment]
