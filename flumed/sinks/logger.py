"""Sink `logger`: logs each event at INFO, as Flume's LoggerSink (for debugging)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flumed.config.keys import key
from flumed.sinks.base import TAKE_TIMEOUT, Sink, Status

log = logging.getLogger("flumed.sinks.logger")


@dataclass(frozen=True, slots=True)
class LoggerSinkConfig:
    maxBytesToLog: int = key(16, ge=0, doc="Body bytes shown per event.")
    batchSize: int = key(100, ge=1)


def _hex_dump(body: bytes) -> str:
    # Flume prints a hex dump with the printable text beside it.
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in body)
    return f"{body.hex(' ')} {text}"


class LoggerSink(Sink):
    """Logs `Event: { headers:{...} body: <hex> <text> }`, one line per event.

    One log line per event is the purpose of this sink; it is for debugging, not volume.
    """

    Config = LoggerSinkConfig
    description = "Logs events at INFO."
    config: LoggerSinkConfig

    async def process(self) -> Status:
        n = self.config.batchSize
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(n, TAKE_TIMEOUT)
            self.counter.batch(len(events), n)
            if not events:
                return Status.BACKOFF
            self.counter.EventDrainAttemptCount += len(events)
            limit = self.config.maxBytesToLog
            for e in events:
                log.info("Event: { headers:%s body: %s }", e.headers, _hex_dump(e.body[:limit]))
        self.counter.EventDrainSuccessCount += len(events)
        return Status.READY
