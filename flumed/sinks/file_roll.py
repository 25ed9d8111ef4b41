"""Sink `file_roll`: events into files of a local directory, a new file every interval.

Keys as Flume's RollingFileSink:

- `sink.directory` (required): where the files go; created at start if missing.
- `sink.rollInterval` (30 s): a file is closed this long after it was opened and the
  next batch opens a new one; 0 never rolls.
- `sink.pathManager` (DEFAULT | ROLLTIME), `sink.pathManager.prefix` (""),
  `sink.pathManager.extension` (""): file names as Flume's path managers,
  DEFAULT `<prefix><epoch-ms-at-start>-<n>[.<extension>]`, ROLLTIME
  `<prefix><yyyyMMddHHmmss>-<n>[.<extension>]` (local time, n restarts each second).
- `sink.serializer` (TEXT | HEADER_AND_TEXT | AVRO_EVENT | a class path) and
  `sink.serializer.*`, the serializer's own keys (flumed/serializers/). In TOML
  the serializer keys are quoted dotted keys of the `sink` table, as `flumed convert`
  writes them: `[agents.a1.sinks.k1.sink]` `serializer = "avro_event"`
  `"serializer.compressionCodec" = "deflate"`.
- `sink.batchSize` (100).

Delivery: one take per `process()`; the batch is serialized on the loop and written
to the file with one write in the sink's own I/O thread (measured faster than
aiofiles for 100 KB batches: ~95 µs against ~145 µs a batch), which hands it to the
OS before the take commits. No fsync: a committed event survives a crash of flumed,
not of the machine. A failed write rolls the take back (the events stay in the
channel, in order) and raises DeliveryError; the file is truncated back to its last
complete batch, or abandoned for a new file when that is not possible, so no partial
batch stays in it.

Differences from Flume: no empty files. Flume opens the next file at once when it
rolls, so an idle sink leaves an empty file every interval; flumed opens a file
with its first batch. A name that exists already is skipped, never appended to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import key, prefix
from flumed.errors import ComponentStartError, DeliveryError
from flumed.event import Event
from flumed.serializers.base import (
    EventSerializer,
    parse_serializer_config,
    serializer_class,
    serializer_problems,
)
from flumed.sinks.base import BatchSink

log = logging.getLogger("flumed.sinks.file_roll")


@dataclass(frozen=True, slots=True)
class RollingFileSinkConfig:
    directory: str = key(name="sink.directory")
    rollInterval: float = key(30.0, name="sink.rollInterval", ge=0, doc="Seconds; 0: never.")
    pathManager: Literal["DEFAULT", "ROLLTIME"] = key("DEFAULT", name="sink.pathManager")
    filePrefix: str = key("", name="sink.pathManager.prefix")
    extension: str = key("", name="sink.pathManager.extension")
    # `sink.serializer` (the type) and `sink.serializer.*` (its keys) in one prefix
    # table: the type arrives under "" (see `serializer`).
    serializerTable: dict[str, Any] = prefix(
        "sink.serializer", doc="TEXT | HEADER_AND_TEXT | AVRO_EVENT | a class; and its keys."
    )
    batchSize: int = key(100, name="sink.batchSize", ge=1)

    @property
    def serializer(self) -> str:
        return str(self.serializerTable.get("", "TEXT"))

    @property
    def serializerKeys(self) -> dict[str, Any]:
        return {k: v for k, v in self.serializerTable.items() if k}

    def claims(self) -> list[tuple[str, str]]:
        """Two sinks writing one directory would name their files alike."""
        return [(f"directory {os.path.normpath(self.directory)}", "sink.directory")]

    def check(self) -> list[str]:
        out = [] if self.directory else ["key 'sink.directory': must not be empty"]
        return out + serializer_problems(self.serializer, self.serializerKeys, "sink.serializer")


class PathManager:
    """File names as Flume's DefaultPathManager (`roll_time` False) or
    RollTimePathManager (True)."""

    def __init__(self, directory: str, file_prefix: str, extension: str, roll_time: bool) -> None:
        self.directory = directory
        self.prefix = file_prefix
        self.suffix = f".{extension}" if extension else ""
        self.roll_time = roll_time
        self.series = str(time.time_ns() // 1_000_000)
        self.index = 0
        self._last_stamp = ""

    def next_path(self) -> str:
        stamp = self.series
        if self.roll_time:
            stamp = time.strftime("%Y%m%d%H%M%S")
            if stamp != self._last_stamp:
                self.index = 0
                self._last_stamp = stamp
        self.index += 1
        return os.path.join(self.directory, f"{self.prefix}{stamp}-{self.index}{self.suffix}")


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` (runs in the sink's I/O thread). Raises OSError."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _open_new(manager: PathManager) -> tuple[int, str]:
    """Create the next file that does not exist yet (O_EXCL). Raises OSError."""
    for _ in range(1000):
        path = manager.next_path()
        # O_APPEND: after a failed batch is cut off, the next write goes to the new end.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            continue
        return fd, path
    raise OSError(errno.EEXIST, "no free file name", manager.directory)


class _File:
    """The open output file: its descriptor, path, serializer and good length."""

    __slots__ = ("fd", "opened", "path", "serializer", "size")

    def __init__(self, fd: int, path: str, serializer: EventSerializer, opened: float) -> None:
        self.fd = fd
        self.path = path
        self.serializer = serializer
        self.opened = opened
        self.size = 0


class RollingFileSink(BatchSink):
    """Writes each batch to the current file, then commits; rolls by file age."""

    Config = RollingFileSinkConfig
    config: RollingFileSinkConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.serializer_cls = serializer_class(config.serializer)
        self.serializer_config = parse_serializer_config(
            self.serializer_cls, config.serializerKeys, f"sink {name}: key 'sink.serializer'"
        )
        self.paths = PathManager(
            config.directory, config.filePrefix, config.extension, config.pathManager == "ROLLTIME"
        )
        self._file: _File | None = None
        self._io: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        d = self.config.directory
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise ComponentStartError(
                f"sink {self.name}: key 'sink.directory': cannot create {d}: {e.strerror}"
            ) from e
        if not os.access(d, os.W_OK | os.X_OK):
            raise ComponentStartError(f"sink {self.name}: key 'sink.directory': {d} not writable")
        # One thread: writes, opens and closes of this sink stay in order.
        self._io = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"file_roll-{self.name}"
        )
        await super().start()

    async def stop(self) -> None:
        """Close the current file (called after the runner stopped, so no write runs)."""
        if self._file is not None:
            await self._close("stopping")
        if self._io is not None:
            self._io.shutdown(wait=False)
            self._io = None
        await super().stop()

    # -- the file ----------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._io is not None, "sink not started"
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _open(self) -> _File:
        serializer = self.serializer_cls(self.serializer_config)
        try:
            fd, path = await self._run(_open_new, self.paths)
        except OSError as e:
            self.counter.ConnectionFailedCount += 1
            raise DeliveryError(
                f"Sink {self.name}: cannot create a file in {e.filename}: {e}"
            ) from e
        f = _File(fd, path, serializer, time.monotonic())
        head = serializer.begin()
        if head:
            try:
                await self._run(_write_all, fd, head)
            except OSError as e:
                self.counter.ConnectionFailedCount += 1
                await self._run(os.close, fd)
                raise DeliveryError(f"Sink {self.name}: cannot write to {path}: {e}") from e
            f.size = len(head)
        self.counter.ConnectionCreatedCount += 1
        log.debug("Sink %s opened %s.", self.name, path)
        return f

    async def _close(self, why: str) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            tail = f.serializer.end()
            if tail:
                await self._run(_write_all, f.fd, tail)
            await self._run(os.close, f.fd)
        except OSError as e:
            self.counter.ConnectionFailedCount += 1
            log.error("Sink %s could not close %s (%s): %s", self.name, f.path, why, e)
            return
        self.counter.ConnectionClosedCount += 1
        log.debug("Sink %s closed %s (%s).", self.name, f.path, why)

    async def _recover(self, f: _File, err: OSError) -> None:
        """After a failed write: cut the file back to its last whole batch, or give it up."""
        try:
            if f.size < 0:
                raise OSError(errno.EIO, "length unknown after a cancelled write")
            await self._run(os.ftruncate, f.fd, f.size)
        except OSError as e:
            log.error(
                "Sink %s: %s may end in a partial batch (cannot truncate after %s: %s); "
                "continuing in a new file.",
                self.name,
                f.path,
                err,
                e,
            )
            await self._close("write failed")

    # -- delivery ----------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.config.batchSize

    async def prepare(self) -> None:
        """Close the current file when it is due to roll (before the take)."""
        f = self._file
        if f is not None and (
            f.size < 0
            or (
                self.config.rollInterval and time.monotonic() - f.opened >= self.config.rollInterval
            )
        ):
            await self._close("roll interval" if f.size >= 0 else "cancelled write")

    async def deliver(self, events: list[Event]) -> None:
        """Write `events` to the current file (opened now if there is none).

        Raises:
            DeliveryError: the file could not be created or written; the take is rolled
                back and the events stay at the head of the channel.
        """
        f = self._file
        if f is None:
            f = self._file = await self._open()
        data = f.serializer.serialize(events)
        try:
            await self._run(_write_all, f.fd, data)
        except OSError as e:
            self.counter.EventWriteFail += 1
            await self._recover(f, e)
            raise DeliveryError(f"Sink {self.name}: write to {f.path} failed: {e}") from e
        except asyncio.CancelledError:
            # The write may still land after the rollback: a duplicate at worst,
            # but the file's good length is unknown, so it takes no more batches.
            f.size = -1
            raise
        f.size += len(data)
