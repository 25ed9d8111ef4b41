"""The event serializer contract (Flume's EventSerializer, per batch).

A file-writing sink (file_roll, and later HDFS-like sinks) makes one serializer per
file it opens, from the sink's `sink.serializer` type and `sink.serializer.*` keys::

    cls = serializer_class("avro_event")            # pure: for Config.check()
    config = parse_serializer_config(cls, keys, where)
    s = cls(config)
    fh.write(s.begin())                              # once, when the file is created
    fh.write(s.serialize(events))                    # once per batch: one write
    fh.write(s.end())                                # once, before the file is closed

`serialize` returns a batch's bytes so that the sink can hand them to the file in a
single write (off the event loop) and commit its take only after that write.
`write_batch(fh, events)` and `flush(fh)` do the same on a binary file object, for
callers that write synchronously. A serializer is used by one task at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO, ClassVar

from flumed import registry
from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.event import Event


class EventSerializer:
    """One file's serializer. Subclasses implement `serialize`, and `begin`/`end` when
    the format has a header or trailer.

    `supports_reopen` says whether a later serializer may append to a file this one
    wrote (true for line formats, false for Avro container files, as in Flume).
    """

    Config: ClassVar[type]
    supports_reopen: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        self.config = config

    def begin(self) -> bytes:
        """Bytes that start a new file (Flume's afterCreate)."""
        return b""

    def serialize(self, events: list[Event]) -> bytes:
        """The bytes of one batch, complete: a reader of the file sees whole events."""
        raise NotImplementedError

    def end(self) -> bytes:
        """Bytes that finish the file (Flume's beforeClose)."""
        return b""

    def write_batch(self, fh: BinaryIO, events: list[Event]) -> int:
        """Write one batch to `fh` with a single write; returns the bytes written.

        Raises:
            OSError: from the file.
        """
        data = self.serialize(events)
        fh.write(data)
        return len(data)

    def flush(self, fh: BinaryIO) -> None:
        """Hand what was written to the OS (not fsync). Raises OSError."""
        fh.flush()


def serializer_class(type_name: str) -> type[EventSerializer]:
    """The serializer class for a type name (`text`, `AVRO_EVENT`, a Flume builder class
    name or a Python class path).

    Raises:
        registry.UnknownTypeError: unknown name or not importable.
    """
    cls = registry.resolve("serializers", type_name)
    if not (isinstance(cls, type) and issubclass(cls, EventSerializer)):
        raise registry.UnknownTypeError(f"serializer type {type_name!r} is not an EventSerializer")
    return cls


def parse_serializer_config(cls: type[EventSerializer], keys: Mapping[str, Any], where: str) -> Any:
    """Parse a serializer's keys (the sink's `sink.serializer.*`, prefix removed).

    Raises:
        ConfigError: every problem, prefixed with `where`.
    """
    return parse(cls.Config, keys, where)


def serializer_problems(type_name: str, keys: Mapping[str, Any], key_prefix: str) -> list[str]:
    """Problems with a sink's serializer settings, for the sink's Config.check()."""
    try:
        cls = serializer_class(type_name)
    except registry.UnknownTypeError as e:
        return [f"key '{key_prefix}': {e}"]
    try:
        parse(cls.Config, keys, f"key '{key_prefix}'")
    except ConfigError as e:
        return [p.replace(f"key '{key_prefix}': key '", f"key '{key_prefix}.") for p in e.problems]
    return []
