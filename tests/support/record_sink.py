"""A sink for tests: writes each event to `path`, flushed before the take commits, so a
test reads exactly what left the channel.

Used through the class-path type (`type = "tests.support.record_sink:RecordSink"`), as a
Flume user's custom sink class would be. `format`: `lines` (each body as a line) or
`json` (one JSON object a line: headers `h`, body `b`). `delay` slows each batch to keep
events in the channel (drain tests).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Literal

from flumed.config.keys import key
from flumed.event import Event
from flumed.sinks.base import BatchSink


@dataclass(frozen=True)
class RecordSinkConfig:
    path: str = key()
    batchSize: int = key(100, ge=1)
    delay: float = key(0.0, ge=0, doc="Seconds slept per batch (to fill the channel).")
    format: Literal["lines", "json"] = key("lines")


class RecordSink(BatchSink):
    Config = RecordSinkConfig
    config: RecordSinkConfig

    async def start(self) -> None:
        self._fh = open(self.config.path, "ab")  # noqa: SIM115
        await super().start()

    async def stop(self) -> None:
        self._fh.close()
        await super().stop()

    async def deliver(self, events: list[Event]) -> None:
        if self.config.delay:
            await asyncio.sleep(self.config.delay)
        if self.config.format == "json":
            self._fh.write(
                "".join(
                    json.dumps({"h": e.headers, "b": e.body.decode("utf-8", "replace")}) + "\n"
                    for e in events
                ).encode()
            )
        else:
            self._fh.write(b"".join(e.body + b"\n" for e in events))
        self._fh.flush()
