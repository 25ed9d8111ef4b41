"""Source `spooldir`: reads every file dropped into a directory, then marks it done.

Keys are Flume's SpoolDirectorySource keys (docs/spooldir-exec.md). How it works, in
one task owned by the source:

- The directory is listed (in an executor) when a new file is needed; eligible files
  are ordered by `consumeOrder` and taken one at a time. With nothing to do the task
  waits `pollDelay` ms (or until stopped): no busy loop.
- A file is read in large chunks in an executor, split once per chunk, and handed to
  the channel processor in batches of `batchSize`. After each committed batch the
  position is written to a small JSON tracker (`<trackerDir>/.flumed-spool.json`), so
  a restart resumes after the last committed batch (at-least-once: a crash between
  commit and tracker write repeats one batch).
- A full channel keeps the position; the same batch is offered again with a growing
  backoff (250 ms doubling up to `maxBackoff`), and nothing more is read.
- At EOF the file is renamed to `<name><fileSuffix>` (or deleted with
  `deletePolicy = immediate`). A file whose size or mtime changed since it was picked
  up is reported (ERROR, GenericProcessingFail) and renamed to `<name>.CHANGED`; a
  file that cannot be decoded under `decodeErrorPolicy = FAIL` (or a corrupt Avro
  file) is reported (ERROR, EventReadFail) and renamed to `<name>.FAILED`. Flume
  stops the whole source in both cases; flumed keeps serving the rest of the
  directory.

Symlinks: the source never leaves `spoolDir`. A symbolic link (to a file or a directory)
is never followed, whatever `recursiveDirectorySearch` says: it is skipped and logged
(rate-limited). A file is opened with O_NOFOLLOW and its resolved path must lie inside
the spool directory; it is renamed or deleted only when the name still is the file that
was read. Directory loops (bind mounts) are cut by remembering each directory visited.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import random
import re
import stat
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import ignored, key
from flumed.errors import ChannelError, ComponentStartError
from flumed.event import Event
from flumed.lifecycle import LifecycleState
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source
from flumed.sources.spooldir_deserializers import (
    _AvroReader,
    _BlobReader,
    _Current,
    _FileFailed,
    _LineReader,
    _Reader,
)

log = logging.getLogger("flumed.sources.spooldir")

#: Suffixes given to files that could not be consumed cleanly; such files are skipped.
CHANGED_SUFFIX = ".CHANGED"
FAILED_SUFFIX = ".FAILED"
TRACKER_FILE = ".flumed-spool.json"
#: Seconds between two warnings of the same kind.
WARN_INTERVAL = 10.0

_DESERIALIZERS = {
    "LINE": "LINE",
    "AVRO": "AVRO",
    "BLOB": "BLOB",
    "org.apache.flume.serialization.LineDeserializer$Builder": "LINE",
    "org.apache.flume.serialization.AvroEventDeserializer$Builder": "AVRO",
    "org.apache.flume.sink.solr.morphline.BlobDeserializer$Builder": "BLOB",
}


def _ascii_compatible(charset: str) -> bool:
    try:
        return "a\n".encode(charset) == b"a\n"
    except (LookupError, UnicodeError):
        return False


@dataclass(frozen=True, slots=True)
class SpoolDirConfig:
    spoolDir: str = key(doc="Directory to read files from.")
    fileSuffix: str = key(".COMPLETED", doc="Appended to a file's name once it is consumed.")
    deletePolicy: Literal["never", "immediate"] = key("never")
    trackingPolicy: Literal["rename"] = key(
        "rename", doc="Only `rename` (Flume's `tracker_dir` policy is not supported)."
    )
    trackerDir: str = key(".flumespool", doc="Holds the position file; relative to spoolDir.")
    fileHeader: bool = key(False)
    fileHeaderKey: str = key("file")
    basenameHeader: bool = key(False)
    basenameHeaderKey: str = key("basename")
    includePattern: str = key("^.*$")
    ignorePattern: str = key("^$")
    consumeOrder: Literal["oldest", "youngest", "random"] = key("oldest")
    pollDelay: int = key(500, ge=1, doc="Milliseconds between listings of an idle directory.")
    recursiveDirectorySearch: bool = key(False)
    batchSize: int = key(100, ge=1)
    inputCharset: str = key("UTF-8")
    decodeErrorPolicy: Literal["FAIL", "REPLACE", "IGNORE"] = key("FAIL")
    deserializer: str = key("LINE", doc="LINE, AVRO, BLOB or Flume's Builder class name.")
    maxLineLength: int = key(2048, name="deserializer.maxLineLength", ge=1)
    outputCharset: str = key("UTF-8", name="deserializer.outputCharset")
    schemaType: Literal["HASH", "LITERAL"] = key("HASH", name="deserializer.schemaType")
    maxBlobLength: int = key(100_000_000, name="deserializer.maxBlobLength", ge=1)
    maxBackoff: int = key(4000, ge=1, doc="Cap (ms) of the backoff while the channel is full.")

    IGNORED = ignored("bufferMaxLines", "bufferMaxLineLength")

    @property
    def kind(self) -> str:
        return _DESERIALIZERS.get(
            self.deserializer.upper(), _DESERIALIZERS.get(self.deserializer, "")
        )

    def claims(self) -> list[tuple[str, str]]:
        """Two sources on one spool directory would fight over its files and tracker."""
        spool = os.path.normpath(self.spoolDir)
        return [(f"spool directory {spool}", "spoolDir")]

    def check(self) -> list[str]:
        problems = []
        if not self.kind:
            problems.append(
                f"key 'deserializer': expected LINE, AVRO or BLOB, got {self.deserializer!r}"
            )
        for name in ("includePattern", "ignorePattern"):
            try:
                re.compile(getattr(self, name))
            except re.error as e:
                problems.append(f"key '{name}': not a valid regular expression: {e}")
        for name, cs in (
            ("inputCharset", self.inputCharset),
            ("deserializer.outputCharset", self.outputCharset),
        ):
            try:
                codecs.lookup(cs)
            except LookupError:
                problems.append(f"key '{name}': unknown charset {cs!r}")
                continue
            if not _ascii_compatible(cs):
                problems.append(
                    f"key '{name}': charset {cs!r} is not ASCII-compatible (lines are split on "
                    "the byte 0x0A); UTF-16/UTF-32 files are not supported"
                )
        if not self.fileSuffix:
            problems.append("key 'fileSuffix': must not be empty")
        return problems


def _fd_path(fd: int, path: str) -> str:
    """The resolved path of an open file (Linux names it in /proc; elsewhere the name's)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


class _Tracker:
    """The position of the file being read, in one small JSON file.

    Rewritten in place (one pwrite, padded to its previous length) after each committed
    batch: that survives a crash of the daemon; after a power loss the position may be
    older, which repeats events (never loses them).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        raw = os.pread(self.fd, 1 << 16, 0).strip()
        self._len = len(raw)
        try:
            rec = json.loads(raw) if raw else None
        except ValueError:
            log.warning("Spool tracker %s is unreadable; starting files from 0.", path)
            rec = None
        self.record: dict[str, Any] | None = rec if isinstance(rec, dict) else None

    def save(self, record: dict[str, Any] | None) -> None:
        self.record = record
        data = json.dumps(record).encode()
        n = len(data)
        os.pwrite(self.fd, data.ljust(self._len), 0)
        self._len = n if n >= self._len else self._len

    def close(self) -> None:
        os.close(self.fd)


class SpoolDirectorySource(Source):
    """Consumes the files of `spoolDir`, one at a time, resuming mid-file after a restart.

    `start()` checks the directory and opens the tracker (raises ComponentStartError);
    the work runs in one owned task; `stop()` ends it after its current batch.
    """

    Config = SpoolDirConfig
    config: SpoolDirConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._tracker: _Tracker | None = None
        self._queue: list[str] = []
        self._skip: set[str] = set()  # files that failed and could not be renamed
        self._warnings: dict[str, RateLimitedLog] = {}
        cfg = config
        self._include = re.compile(cfg.includePattern)
        self._ignore = re.compile(cfg.ignorePattern)
        self.spool_dir = os.path.abspath(cfg.spoolDir)
        self.tracker_dir = os.path.join(self.spool_dir, cfg.trackerDir)
        # The spool directory as the kernel names it (set at start): every file read
        # must resolve inside it.
        self._spool_real = os.path.realpath(self.spool_dir)

    def warn(self, kind: str, msg: str, *args: object) -> None:
        """Log a warning at most once per WARN_INTERVAL per kind (bad input is counted always)."""
        limiter = self._warnings.get(kind)
        if limiter is None:
            limiter = self._warnings[kind] = RateLimitedLog(log, WARN_INTERVAL)
        limiter.warn(msg, *args)

    def _inside(self, real: str) -> bool:
        """Whether a resolved path lies strictly inside the spool directory."""
        root = self._spool_real
        return real.startswith(root.rstrip(os.sep) + os.sep)

    async def start(self) -> None:
        self._prepare()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"source-{self.name}")
        log.info("Source %s consuming %s.", self.name, self.spool_dir)
        await super().start()

    def _prepare(self) -> None:
        """Check the directory, open the tracker. Raises ComponentStartError."""
        self._spool_real = os.path.realpath(self.spool_dir)
        if not os.path.isdir(self.spool_dir):
            raise ComponentStartError(
                f"Source {self.name}: spoolDir {self.spool_dir} is not a directory."
            )
        if not os.access(self.spool_dir, os.R_OK | os.W_OK | os.X_OK):
            raise ComponentStartError(
                f"Source {self.name}: spoolDir {self.spool_dir} must be readable and writable "
                "(files are renamed when done)."
            )
        try:
            os.makedirs(self.tracker_dir, exist_ok=True)
            self._tracker = _Tracker(os.path.join(self.tracker_dir, TRACKER_FILE))
        except OSError as e:
            raise ComponentStartError(
                f"Source {self.name}: cannot use trackerDir {self.tracker_dir}: {e}"
            ) from e
        rec = self._tracker.record
        if rec and isinstance(rec.get("path"), str):
            # Resume the file that was in progress before anything else.
            self._queue = [rec["path"]]

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        await super().stop()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                cur = await self._next_file()
                if cur is None:
                    await self._sleep(self.config.pollDelay / 1000)
                    continue
                try:
                    await self._consume(cur)
                finally:
                    os.close(cur.fd)
        except Exception:
            log.exception("Source %s: the spooling loop failed; the source stops.", self.name)
            self.counter.GenericProcessingFail += 1
            self.state = LifecycleState.FAILED

    # -- picking files ---------------------------------------------------------------

    def _eligible(self, name: str) -> bool:
        if name.startswith("."):
            return False
        if name.endswith((self.config.fileSuffix, CHANGED_SUFFIX, FAILED_SUFFIX)):
            return False
        return bool(self._include.fullmatch(name)) and not self._ignore.fullmatch(name)

    def _scan(self) -> list[str]:
        """Eligible files in consume order. Runs in an executor.

        Symbolic links are never followed (neither to files nor to directories): they are
        skipped and logged. Each directory is visited once (by device and inode), so a
        loop made with bind mounts ends too.
        """
        found: list[tuple[int, str]] = []
        tracker_real = os.path.realpath(self.tracker_dir)
        stack = [self.spool_dir]
        visited: set[tuple[int, int]] = set()
        links: list[str] = []
        while stack and not self._stopping.is_set():
            d = stack.pop()
            try:
                st = os.stat(d, follow_symlinks=False)
                if (st.st_dev, st.st_ino) in visited:
                    continue
                visited.add((st.st_dev, st.st_ino))
                entries = list(os.scandir(d))
            except OSError as err:
                self.warn("scan", "Source %s: cannot list %s: %s", self.name, d, err)
                continue
            for e in entries:
                try:
                    if e.is_symlink():
                        if not e.name.startswith("."):
                            links.append(e.path)
                        continue
                    if e.is_dir(follow_symlinks=False):
                        if (
                            self.config.recursiveDirectorySearch
                            and not e.name.startswith(".")
                            and not self._ignore.fullmatch(e.name)
                            and os.path.realpath(e.path) != tracker_real
                        ):
                            stack.append(e.path)
                        continue
                    if (
                        e.is_file(follow_symlinks=False)
                        and self._eligible(e.name)
                        and e.path not in self._skip
                    ):
                        found.append((e.stat(follow_symlinks=False).st_mtime_ns, e.path))
                except OSError:
                    continue  # vanished while listing
        if links:
            self.warn(
                "symlink",
                "Source %s: skipped %d symbolic link(s) in %s (links are never followed, "
                "so the source cannot leave its directory), e.g. %s",
                self.name,
                len(links),
                self.spool_dir,
                links[0],
            )
        order = self.config.consumeOrder
        if order == "random":
            random.shuffle(found)
        else:
            found.sort(key=lambda f: (-f[0] if order == "youngest" else f[0], f[1]))
        return [p for _, p in found]

    def _open_inside(self, path: str) -> int | None:
        """Open `path` for reading when it is a regular file inside the spool directory
        (not through a symlink, at any level); None otherwise (logged, rate-limited)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            if os.path.islink(path):
                self.warn("symlink", "Source %s: %s is a symbolic link; not read.", self.name, path)
            return None  # gone, a link, or not readable yet
        try:
            st = os.fstat(fd)
            real = _fd_path(fd, path)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode) or not self._inside(real):
            os.close(fd)
            self.warn(
                "outside",
                "Source %s: %s resolves to %s, outside %s (or not a regular file); not read.",
                self.name,
                path,
                real,
                self._spool_real,
            )
            return None
        return fd

    async def _next_file(self) -> _Current | None:
        loop = asyncio.get_running_loop()
        if not self._queue:
            # One listing serves until its files are used up (Flume lists again per file
            # for oldest/youngest; see docs).
            self._queue = await loop.run_in_executor(None, self._scan)
            self._queue.reverse()
        while self._queue:
            path = self._queue.pop()
            if path in self._skip or not self._eligible(os.path.basename(path)):
                continue
            fd = self._open_inside(path)
            if fd is None:
                continue
            st = os.fstat(fd)
            assert self._tracker is not None
            rec = self._tracker.record
            start = 0
            if (
                rec
                and rec.get("path") == path
                and (rec["dev"], rec["ino"]) == (st.st_dev, st.st_ino)
            ):
                start = int(rec["pos"])
                cur = _Current(path, fd, st, start)
                # What the file looked like when it was first picked up, before the restart.
                cur.size, cur.mtime_ns = int(rec["size"]), int(rec["mtime_ns"])
                log.info("Source %s: resuming %s at %d.", self.name, path, start)
            else:
                cur = _Current(path, fd, st, 0)
            cfg = self.config
            if cfg.fileHeader:
                cur.headers[cfg.fileHeaderKey] = path
            if cfg.basenameHeader:
                cur.headers[cfg.basenameHeaderKey] = os.path.basename(path)
            self._tracker.save(cur.record(start))
            return cur
        return None

    # -- consuming one file ----------------------------------------------------------

    async def _consume(self, cur: _Current) -> None:
        kind = self.config.kind
        reader: _Reader
        if kind == "AVRO":
            reader = _AvroReader(self, cur)
        elif kind == "BLOB":
            reader = _BlobReader(self, cur)
        else:
            reader = _LineReader(self, cur)
        try:
            await self._consume_with(cur, reader)
        finally:
            if isinstance(reader, _AvroReader):
                reader.close()

    async def _consume_with(self, cur: _Current, reader: _Reader) -> None:
        assert self._tracker is not None
        n = self.config.batchSize
        while not self._stopping.is_set():
            try:
                bodies = await reader.read(n)
            except _FileFailed as e:
                self._set_aside(cur, FAILED_SUFFIX, str(e), counter="EventReadFail")
                return
            except OSError as e:
                self._set_aside(cur, FAILED_SUFFIX, f"cannot be read: {e}", counter="EventReadFail")
                return
            if bodies is None:
                self._retire(cur)
                return
            if not bodies:
                continue
            hdrs = dict(cur.headers)
            if isinstance(reader, _AvroReader):
                hdrs[reader.header[0]] = reader.header[1]
            events = [Event(b, dict(hdrs)) for b in bodies] if hdrs else [Event(b) for b in bodies]
            if not await self._deliver(events):
                return  # stopping: the tracker keeps the last committed position
            self._tracker.save(cur.record(reader.pos))

    async def _deliver(self, events: list[Event]) -> bool:
        """Commit `events`, offering what the channel refused again with a growing
        backoff. False when the source stops first (the batch is not committed)."""
        self.counter.EventReceivedCount += len(events)
        self.counter.AppendBatchReceivedCount += 1

        def refused(e: ChannelError, left: int) -> None:
            self.warn("full", "Source %s: channel refused a batch, backing off: %s", self.name, e)

        return await self.deliver(
            events, self._stopping, refused, max_backoff=self.config.maxBackoff / 1000
        )

    def _retire(self, cur: _Current) -> None:
        """At EOF: check the file is unchanged since pick-up, then rename or delete it."""
        assert self._tracker is not None
        if not self._still_inside(cur):
            self._skip.add(cur.path)
            self._tracker.save(None)
            return
        try:
            st = os.stat(cur.path, follow_symlinks=False)
        except OSError as e:
            log.error("Source %s: %s vanished while being read: %s", self.name, cur.path, e)
            self.counter.GenericProcessingFail += 1
            self._tracker.save(None)
            return
        if (st.st_dev, st.st_ino) != (cur.dev, cur.ino) or st.st_size != cur.size:
            what = f"has changed size since being read ({cur.size} -> {st.st_size} bytes)"
            self._set_aside(cur, CHANGED_SUFFIX, what, counter="GenericProcessingFail")
            return
        if st.st_mtime_ns != cur.mtime_ns:
            self._set_aside(
                cur,
                CHANGED_SUFFIX,
                "has been modified since being read",
                counter="GenericProcessingFail",
            )
            return
        try:
            if self.config.deletePolicy == "immediate":
                os.unlink(cur.path)
            else:
                dest = cur.path + self.config.fileSuffix
                if os.path.exists(dest):
                    n = 1
                    while os.path.exists(f"{cur.path}.{n}{self.config.fileSuffix}"):
                        n += 1
                    alt = f"{cur.path}.{n}{self.config.fileSuffix}"
                    log.error(
                        "Source %s: file name has been re-used with different files: %s exists; "
                        "%s renamed to %s instead.",
                        self.name,
                        dest,
                        cur.path,
                        alt,
                    )
                    self.counter.GenericProcessingFail += 1
                    dest = alt
                os.rename(cur.path, dest)
        except OSError as e:
            log.error(
                "Source %s: cannot retire %s: %s; it will not be read again until a restart.",
                self.name,
                cur.path,
                e,
            )
            self._skip.add(cur.path)
        self._tracker.save(None)

    def _still_inside(self, cur: _Current) -> bool:
        """Whether `cur.path` still is a name inside the spool directory and no symlink:
        a directory on the way swapped for a symlink since the file was read must not
        make the rename or delete act outside. Logged when not."""
        try:
            parent = os.path.realpath(os.path.dirname(cur.path))
            st = os.stat(cur.path, follow_symlinks=False)
        except OSError:
            return True  # gone: the caller reports it
        if (parent == self._spool_real or self._inside(parent)) and not stat.S_ISLNK(st.st_mode):
            return True
        log.error(
            "Source %s: %s no longer names the file that was read inside %s (a directory "
            "on its path was replaced?); it is neither renamed nor deleted.",
            self.name,
            cur.path,
            self._spool_real,
        )
        self.counter.GenericProcessingFail += 1
        return False

    def _set_aside(self, cur: _Current, suffix: str, why: str, counter: str) -> None:
        """Report a file that could not be consumed cleanly and rename it out of the way."""
        assert self._tracker is not None
        setattr(self.counter, counter, getattr(self.counter, counter) + 1)
        dest = cur.path + suffix
        try:
            if not self._still_inside(cur):
                raise OSError("it no longer names the file read inside the spool directory")
            os.rename(cur.path, dest)
            where = f"renamed to {dest}"
        except OSError as e:
            self._skip.add(cur.path)
            where = f"left in place ({e}) and skipped until a restart"
        log.error(
            "Source %s: file %s %s; events read from it so far were delivered; %s. The rest "
            "of the directory is still consumed.",
            self.name,
            cur.path,
            why,
            where,
        )
        self._tracker.save(None)
