"""A sink for tests: appends each body as a line to `path`, flushed before commit.

Used through the class-path type (`type = "tests.support.record_sink:RecordSink"`), as a
Flume user's custom sink class would be. `delay` slows each batch to keep events in the
channel (drain tests).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from flumed.config.keys import key
from flumed.sinks.base import TAKE_TIMEOUT, Sink, Status


@dataclass(frozen=True, slots=True)
class RecordSinkConfig:
    path: str = key()
    batchSize: int = key(100, ge=1)
    delay: float = key(0.0, ge=0)


class RecordSink(Sink):
    Config = RecordSinkConfig
    config: RecordSinkConfig

    async def start(self) -> None:
        self._fh = open(self.config.path, "ab")  # noqa: SIM115
        await super().start()

    async def stop(self) -> None:
        self._fh.close()
        await super().stop()

    async def process(self) -> Status:
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(self.config.batchSize, TAKE_TIMEOUT)
            if not events:
                return Status.BACKOFF
            if self.config.delay:
                await asyncio.sleep(self.config.delay)
            self._fh.write(b"".join(e.body + b"\n" for e in events))
            self._fh.flush()
        self.counter.EventDrainSuccessCount += len(events)
        return Status.READY
