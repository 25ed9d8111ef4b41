"""Sink `logger`: logs each event at INFO, as Flume's LoggerSink (for debugging)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flumed.config.keys import key
from flumed.event import Event
from flumed.sinks.base import BatchSink

log = logging.getLogger("flumed.sinks.logger")


@dataclass(frozen=True, slots=True)
class LoggerSinkConfig:
    maxBytesToLog: int = key(16, ge=0, doc="Body bytes shown per event.")
    batchSize: int = key(100, ge=1, doc="Events taken per transaction.")


def _hex_dump(body: bytes) -> str:
    # Flume prints a hex dump with the printable text beside it.
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in body)
    return f"{body.hex(' ')} {text}"


class LoggerSink(BatchSink):
    """Logs `Event: { headers:{...} body: <hex> <text> }`, one line per event.

    One log line per event is the purpose of this sink; it is for debugging, not volume.
    """

    Config = LoggerSinkConfig
    config: LoggerSinkConfig

    async def deliver(self, events: list[Event]) -> None:
        limit = self.config.maxBytesToLog
        for e in events:
            log.info("Event: { headers:%s body: %s }", e.headers, _hex_dump(e.body[:limit]))
