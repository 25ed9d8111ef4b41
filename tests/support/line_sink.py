"""Sink `lines` (the worked example of docs/writing-components.md): sends each batch
to a TCP server as newline-terminated bodies and commits once the server answered one
`OK` line for the batch. Keys: `hostname`, `port`, `batchSize`, `request-timeout` (ms).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from flumed.config.keys import ignored, key
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.sinks.base import BatchSink

log = logging.getLogger("flumed.sinks.lines")


@dataclass(frozen=True, slots=True)
class LineSinkConfig:
    hostname: str = key()
    port: int = key(ge=1, le=65535)
    batchSize: int = key(100, ge=1, doc="Events taken and sent per transaction.")
    request_timeout: int = key(20000, name="request-timeout", ge=1, doc="ms")

    IGNORED = ignored("threads")

    def check(self) -> list[str]:
        return [] if "\n" not in self.hostname else ["key 'hostname': one line, please"]


class LineSink(BatchSink):
    Config = LineSinkConfig
    config: LineSinkConfig

    def __init__(self, name: str, config: LineSinkConfig) -> None:
        super().__init__(name, config)
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def prepare(self) -> None:
        """Connect before anything is taken: a server that is down costs the channel
        nothing. Raises DeliveryError (the runner backs off)."""
        if self._conn is not None:
            return
        try:
            self._conn = await asyncio.open_connection(self.config.hostname, self.config.port)
        except OSError as e:
            self.counter.ConnectionFailedCount += 1
            raise DeliveryError(f"Sink {self.name}: cannot connect: {e}") from e
        self.counter.ConnectionCreatedCount += 1

    async def deliver(self, events: list[Event]) -> None:
        assert self._conn is not None, "prepare() first"
        reader, writer = self._conn
        try:
            async with asyncio.timeout(self.config.request_timeout / 1000):
                writer.write(b"".join(e.body + b"\n" for e in events))
                await writer.drain()
                answer = await reader.readline()
        except (OSError, TimeoutError) as e:
            await self._close()
            raise DeliveryError(f"Sink {self.name}: no answer: {e!r}") from e
        if answer != b"OK\n":
            await self._close()
            raise DeliveryError(f"Sink {self.name}: the server answered {answer!r}")

    async def stop(self) -> None:
        await self._close()
        await super().stop()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()
            self.counter.ConnectionClosedCount += 1
