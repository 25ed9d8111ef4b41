"""Channel `file`: a durable channel in one SQLite database (WAL mode), through aiosqlite.

Storage. Each committed put transaction is one row of table `batches`: its events
encoded into one blob (`encode_batch`), with an id that orders the rows. Events of a
row already taken and committed are remembered as an offset in table `offsets` (only
rows partly consumed have one); a row is deleted once all its events are. A crash
therefore brings back exactly the committed-but-not-taken events and the
taken-but-uncommitted ones (takes change nothing on disk until they commit), in order.

Memory. The queue of what can be taken is a deque of pieces `(row id, start, end,
row)`, kept sorted, so a rolled-back take goes back to where it came from. Recent rows
keep their decoded events (up to `cacheBytes`); older ones are read back on take.

Writing. One task owns every write: it gathers the commits that arrived while the
previous write ran into one SQLite transaction (group commit: one fsync for many
commits, puts and takes alike), on aiosqlite's own thread, so the event loop never
waits on the disk. A commit returns once its write is durable (fsyncPerTransaction).

See docs/file-channel.md for the keys, the directory layout, locking and recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import sqlite3
import struct
import time
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice
from pathlib import Path
from typing import Any

import aiosqlite

from flumed.channels.base import Channel, Transaction
from flumed.channels.file_crypto import (
    EncryptionConfig,
    EncryptionConfigError,
    KeyRing,
    MissingKeyError,
    blob_key,
    is_encrypted,
)
from flumed.channels.memory import MemoryChannel
from flumed.channels.waiters import Waiters
from flumed.config.keys import ignored, key, prefix
from flumed.counters import ChannelCounter
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.lifecycle import Backoff, stop_task
from flumed.logs import RateLimitedLog

log = logging.getLogger("flumed.channels.file")

MB = 1 << 20

#: `PRAGMA application_id` of a flumed file-channel database ("FLMD").
APPLICATION_ID = 0x464C4D44
#: `PRAGMA user_version`: the schema this code reads and writes.
SCHEMA_VERSION = 1
PAGE_SIZE = 4096
#: The WAL file is cut back to this size after a checkpoint.
JOURNAL_SIZE_LIMIT = 32 * MB
LOCK_FILE = "flumed.lock"

SCHEMA = """
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,   -- commit order
    count INTEGER NOT NULL,   -- events in data
    crc INTEGER NOT NULL,     -- zlib.crc32(data)
    data BLOB NOT NULL        -- encode_batch(); last, so reading the others skips it
);
CREATE TABLE offsets (
    id INTEGER PRIMARY KEY,   -- a row of batches that is partly taken
    first INTEGER NOT NULL    -- its events before this one are taken and committed
);
CREATE TABLE damaged (
    seq INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    data BLOB,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""
TABLES = frozenset({"batches", "offsets", "damaged"})
#: Run on a new, empty database: settings that only take effect before the first table.
CREATE_PRAGMAS = (f"PRAGMA page_size = {PAGE_SIZE}", "PRAGMA auto_vacuum = INCREMENTAL")
CREATE_SCRIPT = (
    f"BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
    f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
)
INSERT_BATCH = "INSERT INTO batches (id, count, crc, data) VALUES (?, ?, ?, ?)"

#: Body bytes of recently put batches kept decoded in memory (0: always read back).
DEFAULT_CACHE_BYTES = 64 * MB
#: After this many bytes of rows are deleted, look at the free pages of the file.
VACUUM_CHECK_BYTES = 4 * MB
#: Free space left in the file for new rows, so that it does not shrink and regrow.
VACUUM_KEEP_BYTES = 4 * MB
#: Pages freed per vacuum step, to keep each step short.
VACUUM_STEP_PAGES = 4096
#: Rows read back in one query by a take.
LOAD_ROWS = 64
WARN_INTERVAL = 10.0
#: Least seconds between two attempts to give space back when the disk is short of it.
RECLAIM_INTERVAL = 1.0
#: Pages freed per step when giving space back on a short disk (1 MB of WAL a step).
RECLAIM_STEP_PAGES = 256
#: Backoff (seconds) between probes of a database whose take commits failed.
PROBE_INCREMENT = 0.5
PROBE_MAX = 30.0


@dataclass(frozen=True, slots=True)
class FileChannelConfig:
    checkpointDir: str = key(
        "", doc="Used as the directory when dataDirs is not set (Flume's checkpoint directory)."
    )
    dataDirs: str = key(
        "",
        doc="Directory of the channel's database. Flume's comma-separated list is accepted; "
        "only the first directory is used.",
    )
    capacity: int = key(1_000_000, ge=1, doc="Most events held.")
    transactionCapacity: int = key(10_000, ge=1, doc="Most events in one transaction.")
    keep_alive: float = key(3.0, name="keep-alive", ge=0, doc="Seconds a put waits for room.")
    minimumRequiredSpace: int = key(
        500 * MB, ge=0, doc="Puts are refused while the disk has less free space (bytes)."
    )
    fsyncPerTransaction: bool = key(
        True, doc="fsync every commit (false: survive kill -9 but not a power loss)."
    )
    cacheBytes: int = key(
        DEFAULT_CACHE_BYTES,
        ge=0,
        doc="flumed only: bytes of recent batches kept decoded in memory, to take them "
        "without reading the disk.",
    )
    encryption: dict[str, Any] = prefix(
        "encryption",
        doc="Flume's encryption.* keys: batches encrypted at rest with AES-GCM "
        "(docs/file-channel.md).",
    )

    IGNORED = ignored(
        "useDualCheckpoints",
        "backupCheckpointDir",
        "checkpointInterval",
        "checkpointOnClose",
        "maxFileSize",
        "use-log-replay-v1",
        "use-fast-replay",
        "fsyncInterval",
        "write-timeout",
        "checkpoint-timeout",
    )

    def claims(self) -> list[tuple[str, str]]:
        """One database directory per channel (the default one is named after it)."""
        dirs = _split_dirs(self.dataDirs) or _split_dirs(self.checkpointDir)
        if not dirs:
            return []
        key = "dataDirs" if _split_dirs(self.dataDirs) else "checkpointDir"
        return [(f"data directory {os.path.normpath(dirs[0])}", key)]

    def check(self) -> list[str]:
        problems = []
        if self.transactionCapacity > self.capacity:
            problems.append(
                f"transactionCapacity ({self.transactionCapacity}) must not exceed "
                f"capacity ({self.capacity})"
            )
        problems += EncryptionConfig.from_prefix(self.encryption)[1]
        return problems

    def notes(self) -> list[str]:
        """Warnings about keys Flume uses and flumed does not (logged by the config parser)."""
        out = []
        dirs = _split_dirs(self.dataDirs)
        cp = self.checkpointDir.strip()
        if dirs and cp and Path(cp) != Path(dirs[0]):
            out.append(
                f"key 'checkpointDir': {cp} is not used; the database and its write-ahead "
                f"log (which is the checkpoint) live in dataDirs, {dirs[0]}"
            )
        if len(dirs) > 1:
            out.append(
                f"key 'dataDirs': lists {len(dirs)} directories; flumed keeps one database "
                f"per channel and uses only the first, {dirs[0]}"
            )
        return out


def _split_dirs(value: str) -> list[str]:
    return [d.strip() for d in value.split(",") if d.strip()]


def resolve_dir(
    config: FileChannelConfig, channel: str, env: Mapping[str, str] | None = None
) -> Path:
    """The channel's data directory (pure: nothing is created).

    `dataDirs` (its first entry), else `checkpointDir`, else `$STATE_DIRECTORY/<channel>`
    under systemd (StateDirectory=flumed), else `~/.flumed/file-channel/<channel>`.
    """
    env = os.environ if env is None else env
    dirs = _split_dirs(config.dataDirs)
    if dirs:
        return Path(dirs[0]).expanduser()
    if config.checkpointDir.strip():
        return Path(config.checkpointDir.strip()).expanduser()
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / safe_name(channel)
    home = env.get("HOME") or os.path.expanduser("~")  # (never raises)
    return Path(home) / ".flumed" / "file-channel" / safe_name(channel)


def safe_name(channel: str) -> str:
    """A file name for a channel name (its characters outside [A-Za-z0-9._-] become _)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", channel)
    return "_" + name if name.startswith(".") or not name else name


def db_path(directory: Path, channel: str) -> Path:
    return directory / f"{safe_name(channel)}.db"


# -- event encoding ------------------------------------------------------------------

_HEAD = struct.Struct("<II")  # events, bytes of the headers' JSON
_ONE = struct.Struct("<I")


def encode_batch(events: Sequence[Event]) -> bytes:
    """One blob for a batch: counts, body lengths (u32 LE), bodies, headers as JSON.

    The headers' JSON (a list of one dict per event) is left out when no event has one.
    """
    n = len(events)
    bodies = [e.body for e in events]
    hjson = b""
    for e in events:
        if e.headers:
            hjson = json.dumps([e.headers for e in events], separators=(",", ":")).encode()
            break
    parts = [_HEAD.pack(n, len(hjson)), struct.pack(f"<{n}I", *map(len, bodies))]
    parts += bodies
    parts.append(hjson)
    return b"".join(parts)


def decode_batch(data: bytes) -> list[Event]:
    """The events of an `encode_batch` blob.

    Raises:
        ValueError: the blob is not a well-formed batch.
    """
    try:
        n, hlen = _HEAD.unpack_from(data)
        if n == 1 and not hlen:  # a batch of one event: common from line sources
            (size,) = _ONE.unpack_from(data, _HEAD.size)
            if _HEAD.size + 4 + size != len(data):
                raise ValueError(f"batch of {len(data)} bytes, expected {_HEAD.size + 4 + size}")
            return [Event(data[_HEAD.size + 4 :])]
        lens = struct.unpack_from(f"<{n}I", data, _HEAD.size)
    except struct.error as e:
        raise ValueError(f"truncated batch: {e}") from None
    offsets = list(accumulate(lens, initial=_HEAD.size + 4 * n))
    end = offsets[-1]
    if end + hlen != len(data):
        raise ValueError(f"batch of {len(data)} bytes, expected {end + hlen}")
    bodies = [data[a:b] for a, b in zip(offsets, islice(offsets, 1, None), strict=False)]
    if not hlen:
        return [Event(b) for b in bodies]
    headers = json.loads(data[end:])
    if not isinstance(headers, list) or len(headers) != n:
        raise ValueError("batch headers do not match its events")
    return [Event(b, h) for b, h in zip(bodies, headers, strict=True)]


# -- the directory lock --------------------------------------------------------------


class DirLock:
    """An exclusive `flock` on `<dir>/flumed.lock`, held while a channel uses the directory.

    The kernel drops it when the process dies, so a crash never leaves a stale lock.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, owner: str) -> None:
        """Raises ChannelError naming the directory when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ChannelError(
                f"data directory {self.directory} is in use by another flumed agent "
                f"({holder}; lock {self.path}). Two agents must never share a file channel's "
                "directory: stop the other agent, or give this channel its own dataDirs."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {owner}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# -- errors naming the file ----------------------------------------------------------


def recover_hint(directory: Path, channel: str) -> str:
    return (
        f"Nothing was changed. Stop the agent and run `flumed file-channel-recover --dir "
        f"{directory} --channel {channel}`: it copies every readable event into a fresh "
        "database and keeps the damaged file beside it (see docs/file-channel.md)."
    )


class DamagedDatabaseError(ChannelError):
    """The database file cannot be used as it is; the message names it and the way out."""

    retriable = False


# -- the channel ---------------------------------------------------------------------


class FileChannelCounter(ChannelCounter):
    """The channel counters plus those of Flume's FileChannelCounter that apply here.

    EventPutErrorCount / EventTakeErrorCount: commits (and read-backs) that failed on
    the database; CheckpointWriteErrorCount: failed checkpoints of the WAL at stop;
    Unhealthy: 1 while the last write failed, until one succeeds; Closed: 1 when stopped.
    """

    NAMES = (
        *ChannelCounter.NAMES,
        "EventPutErrorCount",
        "EventTakeErrorCount",
        "CheckpointWriteErrorCount",
        "Unhealthy",
        "Closed",
    )
    EventPutErrorCount: int
    EventTakeErrorCount: int
    CheckpointWriteErrorCount: int
    Unhealthy: int
    Closed: int

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.Closed = 1

    def start(self) -> None:
        super().start()
        self.Closed = 0

    def stop(self) -> None:
        super().stop()
        self.Closed = 1


Piece = tuple[int, int, int, "_Row"]  # (row id, start, end, row): events [start, end)


class _Row:
    """One row of `batches`, as the channel tracks it in memory."""

    __slots__ = ("count", "crc", "data", "done", "events", "first", "gone", "id", "loading", "size")

    def __init__(self, rid: int, count: int, size: int, first: int = 0) -> None:
        self.id = rid
        self.count = count
        self.size = size
        self.first = first  # persisted: [0, first) taken and committed
        # Committed-taken ranges past `first` (takes committed out of order); a shared
        # empty tuple for almost every row, as a restart may load a million of them.
        self.done: tuple[tuple[int, int], ...] = ()
        self.events: list[Event] | None = None
        self.loading: asyncio.Future[None] | None = None
        self.data: bytes | None = None  # only until written
        self.crc = 0
        self.gone = False


def _advance(
    first: int, done: Sequence[tuple[int, int]], new: Sequence[tuple[int, int]]
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Merge newly committed ranges; return the new persisted offset and what is left."""
    if not done and len(new) == 1:  # the usual case: one take of the batch's head
        s, e = new[0]
        if s <= first:
            return max(first, e), ()
    merged: list[tuple[int, int]] = []
    for s, e in sorted([*done, *new]):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    while merged and merged[0][0] <= first:
        first = max(first, merged.pop(0)[1])
    return first, tuple(merged)


class _Op:
    """One commit handed to the writer: new rows (a put), pieces (a take) or quarantine."""

    __slots__ = (
        "fut",
        "n",
        "orphaned",
        "pieces",
        "probe",
        "quarantine",
        "reclaim",
        "rows",
        "state",
    )

    PENDING, DONE, FAILED = 0, 1, 2

    def __init__(
        self,
        fut: asyncio.Future[None] | None,
        n: int = 0,
        rows: list[_Row] | None = None,
        pieces: list[Piece] | None = None,
        quarantine: list[tuple[_Row, str]] | None = None,
    ) -> None:
        self.fut = fut
        self.n = n
        self.rows = rows or []
        self.pieces = pieces or []
        self.quarantine = quarantine or []
        self.state = _Op.PENDING
        #: A small test write (the database could not record takes): see _probe_loop.
        self.probe = False
        #: Give free pages and the WAL back to the file system (the disk is short).
        self.reclaim = False
        # The take's owner was cancelled while waiting: the writer puts the pieces back
        # if the write fails (the transaction's rollback could not know the outcome).
        self.orphaned = False


class FileTransaction(Transaction):
    """A put stages its events in memory and writes them as one row at commit; a take
    holds pieces of rows (hidden from other takers) and deletes them at commit."""

    __slots__ = ("_ntaken", "_op", "_pieces", "_put")

    channel: FileChannel

    def __init__(self, channel: FileChannel) -> None:
        super().__init__(channel)
        self._put: list[Event] = []
        self._pieces: list[Piece] = []
        self._ntaken = 0
        self._op: _Op | None = None

    async def _do_put(self, events: Sequence[Event]) -> None:
        ch = self.channel
        self._check_capacity(len(self._put), len(events))
        self._put.extend(events)
        ch.counter.EventPutAttemptCount += len(events)

    async def _do_take(self, max_events: int, timeout: float) -> list[Event]:
        ch = self.channel
        ch._check_open()
        max_events = self._take_room(self._ntaken, max_events)
        q = ch._queue
        if (not q or ch._takes_blocked) and timeout > 0:
            await ch._not_empty.wait_until(lambda: bool(q) and not ch._takes_blocked, timeout)
        ch.counter.EventTakeAttemptCount += 1
        if ch._takes_blocked:
            # Takes cannot be recorded: handing out a batch would only have the sink
            # deliver it, fail to commit, and deliver it again.
            return []
        out: list[Event] = []
        need = max_events
        while need > 0 and q:
            rid, s, e, row = q[0]
            if row.events is None:
                await ch._load_ahead(need)
                continue
            q.popleft()
            if e - s > need:
                q.appendleft((rid, s + need, e, row))
                e = s + need
            evs = row.events
            out.extend(evs if s == 0 and e == len(evs) else evs[s:e])
            self._pieces.append((rid, s, e, row))
            need -= e - s
        self._ntaken += len(out)
        return out

    async def _do_commit(self) -> None:
        ch = self.channel
        if self._put:
            n = len(self._put)
            ch._check_open()
            await ch._check_space()
            await ch._reserve(n)
            op = _Op(asyncio.get_running_loop().create_future(), n, rows=[ch._new_row(self._put)])
            self._op = op
            ch._submit(op)
            assert op.fut is not None
            await asyncio.shield(op.fut)
            self._put = []
            ch.counter.EventPutSuccessCount += n
        elif self._pieces:
            op = _Op(asyncio.get_running_loop().create_future(), self._ntaken, pieces=self._pieces)
            self._op = op
            ch._submit(op)
            assert op.fut is not None
            await asyncio.shield(op.fut)
            self._pieces = []
            ch.counter.EventTakeSuccessCount += self._ntaken
            self._ntaken = 0

    async def _do_rollback(self) -> None:
        self._put = []
        pieces, self._pieces = self._pieces, []
        self._ntaken = 0
        if not pieces:
            return
        op = self._op
        if op is None or op.state == _Op.FAILED:
            self.channel._return(pieces)
        elif op.state == _Op.PENDING:
            op.orphaned = True
        # DONE: the take is durable although its owner was cancelled; nothing to undo.


class FileChannel(Channel):
    """A durable channel: committed events survive kill -9, power loss and restarts.

    Taken-but-uncommitted events count against capacity (as in the memory channel) and
    are back after a restart. One agent at a time may use a data directory.
    """

    Config = FileChannelConfig
    config: FileChannelConfig
    counter: FileChannelCounter
    counter_class = FileChannelCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.directory = resolve_dir(config, name)
        self.path = db_path(self.directory, name)
        self._queue: deque[Piece] = deque()
        self._used = 0  # queued + taken-uncommitted + reserved by commits in flight
        self._live_bytes = 0
        self._cached_bytes = 0
        self._next_id = 1
        self._not_empty = Waiters()
        self._not_full = Waiters()
        self._db: aiosqlite.Connection | None = None  # the writer's
        # Takes read batches back on their own connection (and thread), so that a read
        # never queues behind the writer's fsync; WAL lets it read while the writer writes.
        self._reader: aiosqlite.Connection | None = None
        self._lock: DirLock | None = None
        self._ops: list[_Op] = []
        self._ops_ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._freed = 0
        self._adopted: list[Event] = []
        # One rate-limited log per distinct warning: a low disk must not silence write
        # failures, nor the reverse.
        self._space_log = RateLimitedLog(log, WARN_INTERVAL)
        self._write_log = RateLimitedLog(log, WARN_INTERVAL)
        self._vacuum_log = RateLimitedLog(log, WARN_INTERVAL)
        self._last_reclaim = -RECLAIM_INTERVAL
        self._freed_since_reclaim = 1  # (the database may hold free pages at start)
        #: Set when a take commit could not be written; cleared by the next good write.
        self._takes_blocked = False
        self._probe: asyncio.Task[None] | None = None
        self._probe_stop = asyncio.Event()
        self._encryption = EncryptionConfig.from_prefix(config.encryption)[0]
        self._ring: KeyRing | None = None

    # -- Channel API -------------------------------------------------------------------
    def transaction(self) -> FileTransaction:
        return FileTransaction(self)

    @property
    def size(self) -> int:
        return self._used

    def adopt(self, old: Channel) -> None:
        """Take over the events of a memory channel this one replaces on reload.

        Called by the agent before `start()`; they are written at start. A file
        channel replaced by one with another directory leaves its events in its own
        database (served again when a channel points there).
        """
        if isinstance(old, MemoryChannel):
            self._adopted = old.hand_over()
        elif isinstance(old, FileChannel) and old.path != self.path and old.size:
            log.warning(
                "Channel %s moves from %s to %s; the %d events in the old database stay "
                "there until a channel uses it again.",
                self.name,
                old.path,
                self.path,
                old.size,
            )

    # -- start and stop ----------------------------------------------------------------
    async def start(self) -> None:
        """Lock the directory, open (or create) and check the database, load the index.

        Raises:
            ChannelError: directory in use, database damaged or of another version
                (the message names the file and how to recover), or an OS error.
        """
        self._closing = False
        self._takes_blocked = False
        self._probe_stop.clear()
        if self._encryption is not None:
            try:
                self._ring = await asyncio.to_thread(self._encryption.load)
            except EncryptionConfigError as e:
                raise ChannelError(f"Channel {self.name}: encryption: {e}") from None
        lock = DirLock(self.directory)
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        lock.acquire(f"channel {self.name}")
        self._lock = lock
        try:
            self._db = await aiosqlite.connect(self.path)
            await self._open_schema()
            nrows = await self._load_index()
            await self._check_stored_keys()
            self._reader = await aiosqlite.connect(self.path)
            await self._reader.execute("PRAGMA query_only = 1")
        except BaseException:
            await self._close_db()
            lock.release()
            self._lock = None
            raise
        self._writer = asyncio.create_task(self._write_loop(), name=f"file-channel-{self.name}")
        log.info(
            "Channel %s: opened %s holding %d events in %d batches.",
            self.name,
            self.path,
            self._used,
            nrows,
        )
        await super().start()
        if self._adopted:
            await self._put_adopted()

    async def stop(self) -> None:
        """Finish the writes in flight, checkpoint the WAL, close, unlock. Idempotent.

        Taken-but-uncommitted events stay in the database (they are back at the next
        start).
        """
        self._closing = True
        self._probe_stop.set()
        probe, self._probe = self._probe, None
        await stop_task(probe, self.stop_timeout(), who=f"Channel {self.name} probe")
        self._ops_ready.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer
        await self._close_db(checkpoint=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._queue.clear()
        self._used = 0
        self._cached_bytes = 0
        self._live_bytes = 0
        await super().stop()

    async def _close_db(self, checkpoint: bool = False) -> None:
        reader, self._reader = self._reader, None
        db, self._db = self._db, None
        for conn in (reader, db):
            if conn is None:
                continue
            if checkpoint and conn is db:
                # Leaves the WAL empty, so the next start reads one file. It may fail (a
                # full disk); the WAL then stays and is read at the next start.
                try:
                    await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except (sqlite3.Error, ValueError) as e:
                    self.counter.CheckpointWriteErrorCount += 1
                    log.info("Channel %s: checkpoint at stop: %s", self.name, e)
            try:
                await conn.close()  # also ends the connection's thread, whatever happens
            except (sqlite3.Error, ValueError) as e:
                log.warning("Channel %s: closing %s: %s", self.name, self.path, e)

    async def _put_adopted(self) -> None:
        events, self._adopted = self._adopted, []
        step = self.config.transactionCapacity
        for i in range(0, len(events), step):
            chunk = events[i : i + step]
            self._used += len(chunk)  # may exceed a smaller capacity until drained
            op = _Op(asyncio.get_running_loop().create_future(), len(chunk))
            op.rows = [self._new_row(chunk)]
            self._submit(op)
            assert op.fut is not None
            await op.fut
        log.info("Channel %s: took over %d events from its predecessor.", self.name, len(events))

    async def _open_schema(self) -> None:
        db = self._db
        assert db is not None
        path = self.path
        hint = recover_hint(self.directory, self.name)
        try:
            app_id = next(iter(await db.execute_fetchall("PRAGMA application_id")))[0]
            version = next(iter(await db.execute_fetchall("PRAGMA user_version")))[0]
            tables = {
                r[0]
                for r in await db.execute_fetchall(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
        except sqlite3.DatabaseError as e:
            raise DamagedDatabaseError(f"database {path} cannot be read: {e}. {hint}") from None
        if not tables and app_id == 0 and version == 0:
            await self._create_schema()
            return
        if app_id != APPLICATION_ID:
            raise DamagedDatabaseError(
                f"{path} is not a flumed file-channel database (application_id {app_id:#x}). "
                "Move it away or give the channel another dataDirs."
            )
        if version != SCHEMA_VERSION:
            newer = version > SCHEMA_VERSION
            raise DamagedDatabaseError(
                f"database {path} has schema version {version}; this flumed reads version "
                f"{SCHEMA_VERSION}. "
                + (
                    "It was written by a newer flumed: run that version to drain it."
                    if newer
                    else "It is from an unknown older format."
                )
                + " Nothing was changed."
            )
        if not TABLES.issubset(tables):
            raise DamagedDatabaseError(
                f"database {path} lacks the tables {sorted(TABLES - tables)}. {hint}"
            )
        try:
            await self._set_pragmas()
            problems = [r[0] for r in await db.execute_fetchall("PRAGMA quick_check")]
        except sqlite3.DatabaseError as e:
            raise DamagedDatabaseError(f"database {path} is damaged: {e}. {hint}") from None
        if problems != ["ok"]:
            shown = "; ".join(str(p) for p in problems[:3])
            raise DamagedDatabaseError(f"database {path} is damaged ({shown}). {hint}")

    async def _create_schema(self) -> None:
        db = self._db
        assert db is not None
        for pragma in CREATE_PRAGMAS:
            await db.execute(pragma)
        await self._set_pragmas()
        await db.executescript(CREATE_SCRIPT)

    async def _set_pragmas(self) -> None:
        db = self._db
        assert db is not None
        mode = next(iter(await db.execute_fetchall("PRAGMA journal_mode = WAL")))[0]
        if str(mode).lower() != "wal":
            raise ChannelError(f"{self.path}: cannot use WAL mode (got {mode}).")
        sync = "FULL" if self.config.fsyncPerTransaction else "NORMAL"
        await db.execute(f"PRAGMA synchronous = {sync}")
        await db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        # Debian and others build SQLite with SECURE_DELETE, which rewrites every page a
        # take frees (zeroed): twice the writes. FAST zeroes only what costs no extra I/O.
        await db.execute("PRAGMA secure_delete = FAST")

    async def _load_index(self) -> int:
        """Rebuild the queue from the rows on disk. Returns the number of rows."""
        db = self._db
        assert db is not None
        try:
            rows = list(
                await db.execute_fetchall(
                    "SELECT b.id, b.count, length(b.data), coalesce(o.first, 0) "
                    "FROM batches b LEFT JOIN offsets o ON o.id = b.id ORDER BY b.id"
                )
            )
        except sqlite3.DatabaseError as e:
            raise DamagedDatabaseError(
                f"database {self.path} is damaged: {e}. " + recover_hint(self.directory, self.name)
            ) from None
        q = self._queue
        used = live = 0
        last = 0
        empty: list[tuple[int]] = []
        for rid, count, size, first in rows:
            last = rid
            if first >= count:
                empty.append((rid,))
                continue
            row = _Row(rid, count, size, first)
            q.append((rid, first, count, row))
            used += count - first
            live += size
        if empty:
            await db.executemany("DELETE FROM batches WHERE id = ?", empty)
            await db.executemany("DELETE FROM offsets WHERE id = ?", empty)
            await db.commit()
        self._used = used
        self._live_bytes = live
        self._next_id = last + 1
        return len(rows)

    async def _check_stored_keys(self) -> None:
        """Refuse to start when the oldest or newest batch cannot be read with the keys
        configured (a key left out of the ring, the wrong key store, encryption turned
        off over encrypted data), rather than fail on the first take."""
        db = self._db
        assert db is not None
        rows = await db.execute_fetchall(
            "SELECT data FROM batches WHERE id IN "
            "((SELECT min(id) FROM batches), (SELECT max(id) FROM batches))"
        )
        plain = False
        for (data,) in rows:
            if not is_encrypted(data):
                plain = True
                continue
            if self._ring is None:
                raise ChannelError(
                    f"Channel {self.name}: {self.path} holds encrypted batches (key "
                    f"{blob_key(data)!r}) but no encryption.* keys are configured"
                )
            try:
                self._ring.decrypt(data)
            except (MissingKeyError, ValueError) as e:
                raise ChannelError(f"Channel {self.name}: {self.path}: {e}") from None
        if plain and self._ring is not None:
            log.warning(
                "Channel %s: %s holds batches written before encryption was configured; "
                "they are read as they are, new batches are encrypted.",
                self.name,
                self.path,
            )

    # -- puts --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._db is None or self._closing:
            raise ChannelError(f"Channel {self.name} is not running.")

    def _free_bytes(self) -> int:
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    async def _check_space(self) -> None:
        """Refuse a put while the disk has less than minimumRequiredSpace free. Before
        refusing, the database gives its free pages and its WAL back to the file system
        (when rows were deleted since it last did, at most once per RECLAIM_INTERVAL
        unless the channel is empty): an emptied channel finds its space again.

        Raises:
            ChannelFullError: still short of space.
        """
        need = self.config.minimumRequiredSpace
        if not need:
            return
        free = self._free_bytes()
        if free >= need:
            return
        now = time.monotonic()
        if self._freed_since_reclaim and (
            now - self._last_reclaim >= RECLAIM_INTERVAL or not self._queue
        ):
            self._last_reclaim = now
            self._freed_since_reclaim = 0
            fut = asyncio.get_running_loop().create_future()
            op = _Op(fut)
            op.reclaim = True
            self._submit(op)
            with contextlib.suppress(ChannelError):
                await asyncio.shield(fut)
            free = self._free_bytes()
            if free >= need:
                return
        msg = (
            f"Channel {self.name}: {free / MB:.1f} MB free on the file system of "
            f"{self.directory}, below minimumRequiredSpace ({need / MB:.1f} MB); puts are "
            "refused until space is freed."
        )
        self._space_log.warn("%s", msg)
        raise ChannelFullError(msg)

    async def _reserve(self, n: int) -> None:
        """Reserve room for `n` events, waiting up to keep-alive. Raises ChannelFullError."""
        cap = self.capacity
        if self._used + n > cap and not await self._not_full.wait_until(
            lambda: self._used + n <= cap, self.config.keep_alive
        ):
            raise self.full_error(n, self._used)
        self._used += n

    def _new_row(self, events: list[Event]) -> _Row:
        data = encode_batch(events)
        if self._ring is not None:
            data = self._ring.encrypt(data)
        row = _Row(self._next_id, len(events), len(data))
        self._next_id += 1
        row.data = data
        row.crc = zlib.crc32(data)
        row.events = events
        return row

    # -- takes -------------------------------------------------------------------------
    def _return(self, pieces: list[Piece]) -> None:
        """Put rolled-back pieces back in the queue where they belong (it stays sorted)."""
        pieces = [p for p in pieces if not p[3].gone]
        if not pieces:
            return
        q = self._queue
        last = (pieces[-1][0], pieces[-1][1])
        if not q or last < (q[0][0], q[0][1]):
            q.extendleft(reversed(pieces))
        else:
            head: list[Piece] = []
            while q and (q[0][0], q[0][1]) < last:
                head.append(q.popleft())
            q.extendleft(reversed(sorted(pieces + head, key=lambda p: (p[0], p[1]))))
        self._not_empty.notify()

    async def _load_ahead(self, need: int) -> None:
        """Read back the rows (not in memory) that the head `need` events are in."""
        rows: list[_Row] = []
        count = 0
        for _, s, e, row in self._queue:
            if row.events is None and (not rows or rows[-1] is not row):
                rows.append(row)
            count += e - s
            if count >= need or len(rows) >= LOAD_ROWS:
                break
        if rows:
            await self._load(rows)

    async def _load(self, rows: list[_Row]) -> None:
        waits = [r.loading for r in rows if r.loading is not None]
        mine = [r for r in rows if r.loading is None and r.events is None]
        if mine:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for r in mine:
                r.loading = fut
            try:
                await self._read_rows(mine)
            except ChannelError as e:
                fut.set_exception(e)
                fut.exception()  # the waiters (if any) get it; none is not an error
                raise
            except BaseException:
                fut.cancel()  # this take was cancelled: the waiters load for themselves
                raise
            else:
                fut.set_result(None)
            finally:
                for r in mine:
                    r.loading = None
        for w in waits:
            # Not `await w`: a cancelled loader must not look like our own cancellation.
            await asyncio.wait([w])
            if not w.cancelled() and w.exception() is not None:
                raise w.exception()  # type: ignore[misc]

    async def _read_rows(self, rows: list[_Row]) -> None:
        db = self._reader
        if db is None:
            raise ChannelError(f"Channel {self.name} is not running.")
        marks = ",".join("?" * len(rows))
        try:
            found = await db.execute_fetchall(
                f"SELECT id, crc, data FROM batches WHERE id IN ({marks})", [r.id for r in rows]
            )
        except (sqlite3.Error, ValueError) as e:
            self.counter.EventTakeErrorCount += 1
            raise ChannelError(
                f"Channel {self.name}: reading {self.path} failed: {e}. "
                + recover_hint(self.directory, self.name)
            ) from None
        by_id = {rid: (crc, data) for rid, crc, data in found}
        bad: list[tuple[_Row, str]] = []
        for r in rows:
            if r.gone:
                continue
            got = by_id.get(r.id)
            if got is None:
                bad.append((r, "row missing"))
                continue
            crc, data = got
            if zlib.crc32(data) != crc:
                bad.append((r, "checksum mismatch"))
                continue
            try:
                if is_encrypted(data):
                    data = self._decrypt(data)
                events = decode_batch(data)
            except ValueError as e:
                bad.append((r, str(e)))
                continue
            if len(events) != r.count:
                bad.append((r, f"{len(events)} events, expected {r.count}"))
                continue
            r.events = events
            self._cached_bytes += r.size
        if bad:
            self._quarantine(bad)

    def _decrypt(self, data: bytes) -> bytes:
        """A stored batch in clear. A key not configured is the operator's to fix, not
        damage: ChannelError (the take fails, the row stays). Raises ValueError when
        the batch does not authenticate (damaged)."""
        if self._ring is None:
            raise ChannelError(
                f"Channel {self.name}: a batch is encrypted (key {blob_key(data)!r}) but no "
                "encryption.* keys are configured"
            )
        try:
            return self._ring.decrypt(data)
        except MissingKeyError as e:
            raise ChannelError(f"Channel {self.name}: {e}") from None

    def _quarantine(self, bad: list[tuple[_Row, str]]) -> None:
        """Set unreadable rows aside (table `damaged`), loudly: their events are lost."""
        ids = {r.id for r, _ in bad}
        q = self._queue  # changed in place: a take may be iterating over it
        lost = sum(p[2] - p[1] for p in q if p[0] in ids)
        kept = [p for p in q if p[0] not in ids]
        q.clear()
        q.extend(kept)
        self._used -= lost
        self.counter.EventTakeErrorCount += len(bad)
        for r, reason in bad:
            r.gone = True
            self._live_bytes -= r.size
            log.error(
                "Channel %s: batch %d of %s is damaged (%s); its %d remaining events are "
                "lost. The row is kept in table 'damaged'.",
                self.name,
                r.id,
                self.path,
                reason,
                r.count - r.first,
            )
        self._submit(_Op(None, quarantine=bad))
        self._not_full.notify()

    # -- the writer --------------------------------------------------------------------
    def _submit(self, op: _Op) -> None:
        if self._closing and self._writer is None:
            raise ChannelError(f"Channel {self.name} is not running.")
        self._ops.append(op)
        self._ops_ready.set()

    async def _write_loop(self) -> None:
        """Owns every write. Runs until stop() and the last pending commit is written."""
        while True:
            if not self._ops:
                if self._closing:
                    return
                self._ops_ready.clear()
                await self._ops_ready.wait()
                continue
            ops, self._ops = self._ops, []
            await self._write_group(ops)

    async def _write_group(self, ops: list[_Op]) -> None:
        db = self._db
        inserts: list[tuple[int, int, int, bytes]] = []
        touched: dict[_Row, list[tuple[int, int]]] = {}
        quarantine: list[tuple[_Row, str]] = []
        for op in ops:
            for r in op.rows:
                assert r.data is not None
                inserts.append((r.id, r.count, r.crc, r.data))
            for _, s, e, row in op.pieces:
                touched.setdefault(row, []).append((s, e))
            quarantine += op.quarantine
        deletes: list[tuple[int]] = []
        offsets: list[tuple[int, int]] = []
        plans: list[tuple[_Row, int, tuple[tuple[int, int], ...]]] = []
        for row, ranges in touched.items():
            if row.gone:
                continue
            first, done = _advance(row.first, row.done, ranges)
            if first >= row.count:
                deletes.append((row.id,))
            elif first != row.first:
                offsets.append((row.id, first))
            plans.append((row, first, done))
        q_ids = [(r.id,) for r, _ in quarantine]
        probe = any(op.probe for op in ops)
        reclaim = any(op.reclaim for op in ops)
        try:
            if db is None:
                raise ValueError("the database is closed")
            if probe:
                # Row 0 is never a batch: written and deleted again, it costs a take's
                # kind of write (a page of `offsets`) and leaves nothing behind.
                await db.execute("INSERT OR REPLACE INTO offsets (id, first) VALUES (0, 0)")
                await db.execute("DELETE FROM offsets WHERE id = 0")
            if inserts:
                await db.executemany(INSERT_BATCH, inserts)
            if quarantine:
                now = time.time()
                await db.executemany(
                    "INSERT INTO damaged (batch_id, count, first, crc, data, reason, at) "
                    "SELECT b.id, b.count, coalesce(o.first, 0), b.crc, b.data, ?, ? "
                    "FROM batches b LEFT JOIN offsets o ON o.id = b.id WHERE b.id = ?",
                    [(reason, now, r.id) for r, reason in quarantine],
                )
            if deletes or q_ids:
                await db.executemany("DELETE FROM batches WHERE id = ?", deletes + q_ids)
                await db.executemany("DELETE FROM offsets WHERE id = ?", deletes + q_ids)
            if offsets:
                await db.executemany(
                    "INSERT OR REPLACE INTO offsets (id, first) VALUES (?, ?)", offsets
                )
            await db.commit()
        except (sqlite3.Error, ValueError, OSError) as e:
            if db is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await db.rollback()
            self._fail(ops, e)
            return
        # Durable: apply to memory.
        self.counter.Unhealthy = 0
        if self._takes_blocked:
            self._takes_blocked = False
            log.warning(
                "Channel %s: writes to %s succeed again; takes resume.", self.name, self.path
            )
            self._not_empty.notify()
        freed = 0
        for row, first, done in plans:
            row.first, row.done = first, done
            if first >= row.count:
                row.gone = True
                freed += row.size
                if row.events is not None:
                    self._cached_bytes -= row.size
                    row.events = None
        self._live_bytes -= freed
        self._freed += freed
        self._freed_since_reclaim += freed
        added = False
        notify_full = False
        for op in ops:
            op.state = _Op.DONE
            for r in op.rows:
                r.data = None
                self._live_bytes += r.size
                if self._cached_bytes + r.size <= self.config.cacheBytes:
                    self._cached_bytes += r.size
                else:
                    r.events = None
                self._queue.append((r.id, 0, r.count, r))
                added = True
            if op.pieces:
                self._used -= op.n
                notify_full = True
            if op.fut is not None and not op.fut.done():
                op.fut.set_result(None)
        if added:
            self._not_empty.notify()
        if notify_full:
            self._not_full.notify()
        if reclaim:
            await self._reclaim()
        elif self._freed >= VACUUM_CHECK_BYTES or (self._freed and not self._queue):
            await self._vacuum()

    def _fail(self, ops: list[_Op], e: BaseException) -> None:
        full = isinstance(e, sqlite3.Error) and (
            getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(e).lower()
        )
        msg = f"Channel {self.name}: writing to {self.path} failed: {e}"
        self._write_log.warn("%s", msg)
        refunded = False
        self.counter.Unhealthy = 1
        for op in ops:
            op.state = _Op.FAILED
            if op.rows:
                self._used -= op.n
                self.counter.EventPutErrorCount += 1
                refunded = True
            elif op.pieces:
                self.counter.EventTakeErrorCount += 1
                self._block_takes(msg)
            if op.orphaned:
                self._return(op.pieces)
            if op.fut is not None and not op.fut.done():
                op.fut.set_exception(ChannelFullError(msg) if full else ChannelError(msg))
        if refunded:
            self._not_full.notify()

    def _block_takes(self, why: str) -> None:
        """A take commit could not be written: hand out no batch until a write succeeds
        (probed with a growing backoff), so a sink does not deliver the same batch again
        and again. The channel reports Unhealthy = 1 meanwhile."""
        if not self._takes_blocked:
            self._takes_blocked = True
            log.error(
                "Channel %s: a take could not be recorded (%s); takes are paused until "
                "%s can be written again (the channel reports Unhealthy).",
                self.name,
                why,
                self.path,
            )
        if (self._probe is None or self._probe.done()) and not self._closing:
            self._probe = asyncio.create_task(self._probe_loop(), name=f"probe-{self.name}")

    async def _probe_loop(self) -> None:
        """Owned by the channel while takes are blocked: try a small write now and then."""
        backoff = Backoff(PROBE_INCREMENT, PROBE_MAX)
        while self._takes_blocked and not self._closing:
            await backoff.wait(self._probe_stop)
            if self._closing or not self._takes_blocked:
                return
            fut = asyncio.get_running_loop().create_future()
            op = _Op(fut)
            op.probe = True
            self._submit(op)
            with contextlib.suppress(ChannelError):
                await asyncio.shield(fut)

    async def _reclaim(self) -> None:
        """Give every free page and the WAL back to the file system (the disk is short)."""
        db = self._db
        assert db is not None
        self._freed = 0
        try:
            # The WAL first: moving pages needs room in it, and on a full disk only a
            # checkpoint gives that back. Then free pages in slices, each checkpointed.
            await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for _ in range(1 << 16):
                free = next(iter(await db.execute_fetchall("PRAGMA freelist_count")))[0]
                if not free:
                    break
                step = min(RECLAIM_STEP_PAGES, self._step_for_disk())
                await db.executescript(f"PRAGMA incremental_vacuum({step});")
                await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (sqlite3.Error, ValueError) as e:
            self._vacuum_log.warn(
                "Channel %s: giving space back from %s failed: %s", self.name, self.path, e
            )

    def _step_for_disk(self) -> int:
        """Pages one vacuum step may move: each moved page is written to the WAL first,
        so a step must fit in a quarter of the free disk (at least 16 pages)."""
        try:
            free = self._free_bytes()
        except OSError:
            return 16
        return max(16, free // (4 * PAGE_SIZE))

    async def _vacuum(self) -> None:
        """Give free pages back to the file system once enough rows were deleted."""
        db = self._db
        assert db is not None
        self._freed = 0
        try:
            free = next(iter(await db.execute_fetchall("PRAGMA freelist_count")))[0]
            keep = (VACUUM_KEEP_BYTES + self._live_bytes // 2) // PAGE_SIZE
            if free <= 2 * keep:
                return
            step = min(free - keep, VACUUM_STEP_PAGES, self._step_for_disk())
            # executescript steps the pragma to the end; execute() would free one page.
            await db.executescript(f"PRAGMA incremental_vacuum({step});")
            if free - step > 2 * keep:
                self._freed = VACUUM_CHECK_BYTES  # more to give back after the next write
        except (sqlite3.Error, ValueError) as e:
            self._vacuum_log.warn(
                "Channel %s: reclaiming space in %s failed: %s", self.name, self.path, e
            )
