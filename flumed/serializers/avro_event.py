"""Serializer `avro_event`: an Avro object container file of Flume events
(Flume's FlumeEventAvroEventSerializer).

Each file is a complete Avro container file whose records are Flume's Event record,
with exactly Flume's schema (a record named `Event`, no namespace)::

    {"type": "record", "name": "Event", "fields": [
      {"name": "headers", "type": {"type": "map", "values": "string"}},
      {"name": "body", "type": "bytes"}]}

Keys as Flume's AbstractAvroEventSerializer: `syncIntervalBytes` (2048000: a block
ends once it holds this many bytes) and `compressionCodec` ("null"; also "deflate",
"bzip2", "xz", and "snappy"/"zstandard" when fastavro's library for them is
installed). Where Flume falls back to no compression for an unknown codec, flumed
refuses the configuration.

Every batch also ends a block (Flume's per-batch `flush()`), so the events a sink
committed are readable by any Avro reader even before the file is closed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema
from fastavro.write import Writer

from flumed.config.keys import key
from flumed.event import Event
from flumed.serializers.base import EventSerializer

#: Flume's FlumeEventAvroEventSerializer.SCHEMA.
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "headers", "type": {"type": "map", "values": "string"}},
        {"name": "body", "type": "bytes"},
    ],
}
_PARSED = parse_schema(SCHEMA)

#: The names of Avro's CodecFactory that fastavro can write.
CODECS = ("null", "deflate", "bzip2", "xz", "snappy", "zstandard")


def codec_problem(codec: str) -> str | None:
    """None when `codec` can be written here, else why not (pure: in memory)."""
    if codec not in CODECS:
        return f"unknown codec {codec!r}; known: {', '.join(CODECS)}"
    try:
        w = Writer(io.BytesIO(), _PARSED, codec=codec)
        w.write({"headers": {}, "body": b""})
        w.flush()
    except ValueError as e:  # fastavro: the codec's library is not installed
        return str(e)
    return None


@dataclass(frozen=True, slots=True)
class AvroEventConfig:
    syncIntervalBytes: int = key(2048000, ge=1)
    compressionCodec: str = key("null")

    def check(self) -> list[str]:
        problem = codec_problem(self.compressionCodec)
        return [f"key 'compressionCodec': {problem}"] if problem else []


class AvroEventSerializer(EventSerializer):
    """One container file: `begin()` is the header with this file's sync marker;
    each `serialize()` is one or more complete blocks."""

    Config = AvroEventConfig
    supports_reopen = False
    config: AvroEventConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._buf = io.BytesIO()
        self._writer = self._new_writer(b"")
        self._header = self._take()

    def _new_writer(self, sync_marker: bytes) -> Writer:
        """A fastavro writer into `_buf` (which it starts with a header)."""
        return Writer(
            self._buf,
            _PARSED,
            codec=self.config.compressionCodec,
            sync_interval=self.config.syncIntervalBytes,
            sync_marker=sync_marker,
        )

    def _take(self) -> bytes:
        data = self._buf.getvalue()
        self._buf.seek(0)
        self._buf.truncate()
        return data

    def begin(self) -> bytes:
        return self._header

    def serialize(self, events: list[Event]) -> bytes:
        w = self._writer
        try:
            for e in events:
                w.write({"headers": e.headers, "body": e.body})
            w.flush()
        except BaseException:
            # Forget the half-built block, so that a retried batch is not doubled: a
            # fresh writer for the same file (same sync marker), its header dropped.
            # fastavro's Writer sets sync_marker in __init__; its type stub omits it.
            marker: bytes = getattr(w, "sync_marker")  # noqa: B009
            self._writer = self._new_writer(marker)
            self._take()
            raise
        return self._take()
