"""Source `taildir`: follows files matching regexes, one event per line (Flume's TaildirSource).

Keys are Flume's (`filegroups`, `positionFile`, `headers.<g>.<k>`, `fileHeader`,
`byteOffsetHeader`, `skipToEnd`, `idleTimeout`, `writePosInterval`, `batchSize`,
`maxBatchCount`, `backoffSleepIncrement`, `maxBackoffSleep`, `cachePatternMatching`),
plus `pollInterval`, `inotify` and `multiline.*` (docs/taildir.md).

How it works, in one task:
- Files are tracked by inode. A file renamed to another name keeps its position (and is
  read to its end through its open descriptor even if the new name no longer matches);
  a new inode at a known path is a new file read from 0; a file shorter than its
  position was truncated (copytruncate) and is read again from 0.
- Every read starts at the committed position: a chunk of up to CHUNK bytes is read in
  an executor, split once, and only newline-terminated lines become events, in batches
  of `batchSize`. A position moves only after `process_batch` returned for its batch, and
  reaches the position file every `writePosInterval`, also in the middle of a long read,
  so a crash re-reads at most the batches committed since that write.
- Changes are seen through inotify on the groups' directories (ctypes, Linux) and a
  cheap rescan every `pollInterval` ms (stat of the directories, fstat of the open files).
- A full channel keeps the position; the source backs off (growing, bounded) and offers
  the same lines again.
- Symlinks: a file name that is a symbolic link is never followed (skipped, logged), files
  are opened with O_NOFOLLOW, and a group's directory is resolved at start: if it later
  resolves elsewhere (a directory on its path replaced by a symlink), the group is not
  listed until it resolves back (docs/security.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import itertools
import json
import logging
import os
import re
import resource
import time
from dataclasses import dataclass
from typing import Any

from flumed._inotify import Inotify
from flumed.config.keys import group_named, key, prefix
from flumed.errors import ChannelError, ChannelFullError, ComponentStartError
from flumed.event import Event
from flumed.lifecycle import LifecycleState
from flumed.logs import RateLimitedLog
from flumed.sources.base import Source

log = logging.getLogger("flumed.sources.taildir")

#: Bytes read from a file at once: big enough that the per-read cost vanishes.
CHUNK = 4 << 20
#: A line with no newline within this many bytes is cut here (Flume has no limit).
MAX_LINE = 64 << 20
#: Directories changed this recently are listed again even if their mtime looks unchanged
#: (mtime granularity: two renames within one tick leave the same mtime).
DIR_MTIME_SLACK = 2.0

_DEFAULT_MAX_BATCH_COUNT = 2**63 - 1
#: Seconds between two warnings about the same broken file.
RATE_LIMIT = 60.0


@dataclass(frozen=True, slots=True)
class TaildirConfig:
    filegroups: dict[str, Any] = prefix(
        "filegroups", doc="group name → absolute path; the file name part is a regex"
    )
    headers: dict[str, Any] = prefix("headers", doc="headers.<group>.<key> = value")
    positionFile: str = key("~/.flume/taildir_position.json")
    byteOffsetHeader: bool = key(False, doc="Add header `byteoffset` (line start offset).")
    skipToEnd: bool = key(False, doc="Files found at start-up with no position start at EOF.")
    idleTimeout: int = key(120000, ge=0, doc="ms without growth before a file is closed.")
    writePosInterval: int = key(3000, ge=1, doc="ms between position file writes.")
    batchSize: int = key(100, ge=1)
    maxBatchCount: int = key(
        _DEFAULT_MAX_BATCH_COUNT, doc="Consecutive batches from one file; <= 0: no limit."
    )
    backoffSleepIncrement: int = key(1000, ge=1, doc="ms; full-channel backoff step.")
    maxBackoffSleep: int = key(5000, ge=1, doc="ms; full-channel backoff cap.")
    cachePatternMatching: bool = key(True, doc="List a directory only when it changed.")
    fileHeader: bool = key(False)
    fileHeaderKey: str = key("file")
    pollInterval: int = key(1000, ge=10, doc="ms between rescans (inotify is the fast path).")
    inotify: bool = key(True, doc="Use inotify where available (Linux).")
    multiline_pattern: str = key(
        "", name="multiline.pattern", doc="Regex matching the first line of a record."
    )
    multiline_timeout: int = key(
        1000, name="multiline.timeout", ge=1, doc="ms a record's last line waits for more."
    )
    multiline_maxLines: int = key(500, name="multiline.maxLines", ge=1)
    multiline_maxBytes: int = key(1 << 20, name="multiline.maxBytes", ge=1, le=CHUNK // 2)

    def groups(self) -> dict[str, tuple[str, str]]:
        """Group name → (directory, file name regex)."""
        out = {}
        for name, v in group_named(self.filegroups).items():
            path = v.get("", "")
            d, _, rx = str(path).rpartition("/")
            out[name] = (d or "/", rx)
        return out

    def group_headers(self) -> dict[str, dict[str, str]]:
        return {
            g: {k: str(v) for k, v in kv.items()} for g, kv in group_named(self.headers).items()
        }

    def claims(self) -> list[tuple[str, str]]:
        """Two sources writing one position file would overwrite each other's positions."""
        path = os.path.normpath(os.path.expanduser(self.positionFile))
        return [(f"position file {path}", "positionFile")]

    def check(self) -> list[str]:
        problems = []
        if not self.filegroups:
            problems.append("missing required key 'filegroups' (e.g. filegroups.f1 = /dir/.*log)")
        for name, v in group_named(self.filegroups).items():
            extra = [k for k in v if k]
            if extra:
                problems.append(f"filegroups.{name}: unknown keys {', '.join(sorted(extra))}")
            path = v.get("")
            if not isinstance(path, str) or not path.startswith("/"):
                problems.append(f"filegroups.{name}: must be an absolute path, got {path!r}")
                continue
            d, _, rx = path.rpartition("/")
            if any(part in (".", "..") for part in d.split("/")):
                problems.append(
                    f"filegroups.{name}: the directory {d!r} must not contain '.' or '..' "
                    "components (write the directory it means)"
                )
                continue
            if not rx:
                problems.append(f"filegroups.{name}: no file name pattern after the last '/'")
                continue
            try:
                re.compile(rx)
            except re.error as e:
                problems.append(f"filegroups.{name}: bad regex {rx!r}: {e}")
        for g, kv in group_named(self.headers).items():
            if g not in group_named(self.filegroups):
                problems.append(f"headers.{g}: no filegroup named {g!r}")
            for k in kv:
                if not k:
                    problems.append(f"headers.{g}: needs a header name (headers.{g}.<name>)")
        if self.multiline_pattern:
            try:
                re.compile(self.multiline_pattern.encode())
            except re.error as e:
                problems.append(f"key 'multiline.pattern': bad regex: {e}")
        return problems


# ---------------------------------------------------------------------------------------


class TailFile:
    """One followed file. `pos` is committed: the start of the next line to emit."""

    __slots__ = (
        "caught_up",
        "fd",
        "group",
        "headers",
        "inode",
        "last_active",
        "matched",
        "ml_deadline",
        "ml_size",
        "path",
        "pos",
    )

    def __init__(self, path: str, inode: int, pos: int, group: str) -> None:
        self.path = path
        self.inode = inode
        self.pos = pos
        self.group = group
        self.fd: int | None = None
        self.headers: dict[str, str] = {}
        self.last_active = time.monotonic()
        self.matched = True  # False: renamed to a name no group matches; read to its end
        self.caught_up = False
        self.ml_deadline: float | None = None  # a multiline record waits until then
        self.ml_size = -1

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


_GSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "=": "\\u003d", "'": "\\u0027"}
)


def dump_positions(files: list[TailFile]) -> bytes:
    """Flume's position file: compact JSON, keys inode, pos, file; Gson's HTML escapes."""
    parts = [f'{{"inode":{tf.inode},"pos":{tf.pos},"file":{_json_path(tf.path)}}}' for tf in files]
    return ("[" + ",".join(parts) + "]").encode("utf-8", "surrogateescape") if parts else b""


def _json_path(path: str) -> str:
    return json.dumps(path, ensure_ascii=False).translate(_GSON_ESCAPES)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def load_positions(text: bytes, where: str) -> dict[int, tuple[int, str]]:
    """Parse a position file into inode → (pos, path).

    Raises:
        ComponentStartError: the file is not Flume's format (an empty file is no positions).
    """
    if not text.strip():
        return {}
    try:
        data = json.loads(text.decode("utf-8", "surrogateescape"))
    except ValueError as e:
        raise ComponentStartError(f"{where}: not valid JSON ({e}); fix or remove it") from None
    if not isinstance(data, list):
        raise ComponentStartError(f"{where}: expected a JSON array; fix or remove it")
    out: dict[int, tuple[int, str]] = {}
    for i, entry in enumerate(data):
        ok = isinstance(entry, dict) and all(k in entry for k in ("inode", "pos", "file"))
        if ok:
            inode, pos, path = entry["inode"], entry["pos"], entry["file"]
            ok = (
                isinstance(inode, int)
                and isinstance(pos, int)
                and isinstance(path, str)
                and pos >= 0
            )
        if not ok:
            raise ComponentStartError(
                f"{where}: entry {i} needs integer 'inode', 'pos' >= 0 and string 'file': "
                f"{entry!r}; fix or remove it"
            )
        out[inode] = (pos, path)
    return out


def _write_file_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class _Group:
    __slots__ = ("directory", "listed_at", "matched", "mtime", "name", "real", "regex")

    def __init__(self, name: str, directory: str, regex: str) -> None:
        self.name = name
        self.directory = directory
        #: Where the directory resolved to when first listed; it must stay there.
        self.real: str | None = None
        self.regex = re.compile(regex)
        self.mtime = -1.0
        self.listed_at = -1.0
        self.matched: dict[str, int] = {}  # path → inode


class TaildirSource(Source):
    """Tails the files of `filegroups`; see the module docstring for the contract.

    One task (`_run`) does all the work; `stop()` lets the batch in flight finish
    (bounded by the channel's keep-alive), writes the position file and closes files.
    """

    Config = TaildirConfig
    config: TaildirConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        cfg: TaildirConfig = config
        heads = cfg.group_headers()
        self._groups = [_Group(g, d, rx) for g, (d, rx) in cfg.groups().items()]
        self._static = {g.name: heads.get(g.name, {}) for g in self._groups}
        self._files: dict[int, TailFile] = {}
        self._by_path: dict[str, TailFile] = {}
        self._dirty: set[str] = set()  # paths inotify reported as changed
        self._relist: set[str] = set()  # directories to list again
        self._full = True  # check every file at the next pass
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inotify: Inotify | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pos_path = os.path.expanduser(cfg.positionFile)
        self._pos_written: bytes | None = None
        self._next_pos = 0.0  # monotonic time of the next position file write
        self._ml = re.compile(cfg.multiline_pattern.encode()) if cfg.multiline_pattern else None
        mbc = cfg.maxBatchCount
        self._max_batches = mbc if mbc > 0 else _DEFAULT_MAX_BATCH_COUNT
        self._backoffs = 0
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        #: Caught-up files beyond this many are closed (reopened when they grow), so that
        #: thousands of files fit under systemd's default soft limit of 1024 descriptors.
        self.max_open = max(16, soft // 2) if soft != resource.RLIM_INFINITY else 1 << 16
        self._warned: dict[str, RateLimitedLog] = {}
        #: Loop turns and timed rescans, for tests that check the loop does not spin.
        self.passes = 0
        self.rescans = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        parent = os.path.dirname(self._pos_path)
        try:
            os.makedirs(parent or ".", exist_ok=True)
            text = await asyncio.to_thread(_read_bytes, self._pos_path)
            positions = load_positions(text, f"positionFile {self._pos_path}")
        except FileNotFoundError:
            positions = {}
        except OSError as e:
            raise ComponentStartError(
                f"Source {self.name}: positionFile {self._pos_path}: {e}"
            ) from None
        except ComponentStartError as e:
            raise ComponentStartError(f"Source {self.name}: {e}") from None
        if cfg.inotify:
            try:
                self._inotify = Inotify(self._on_change, self._on_overflow)
            except (OSError, AttributeError) as e:
                log.warning("Source %s: inotify unavailable (%s); polling only.", self.name, e)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, f"taildir-{self.name}")
        self._scan(initial=True, positions=positions)
        await super().start()
        self._task = asyncio.create_task(self._run(), name=f"source-{self.name}")
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A crash of the loop is no silent stop: the source turns FAILED (`/health`)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("Source %s: stopped by an error: %r", self.name, task.exception())
            self.state = LifecycleState.FAILED

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            # The batch in flight finishes (bounded by the channel's keep-alive).
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:
                task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self._executor is not None:
            try:
                self._write_positions()
            except OSError as e:
                log.error("Source %s: cannot write %s: %s", self.name, self._pos_path, e)
            self._executor.shutdown()
            self._executor = None
        for tf in self._files.values():
            tf.close()
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        await super().stop()

    # -- change notification ------------------------------------------------------------

    def _on_change(self, directory: str, name: str, structural: bool) -> None:
        if structural or not name:
            self._relist.add(directory)
        if name:
            path = os.path.join(directory, name)
            if path in self._by_path:
                self._dirty.add(path)
            else:
                # A write to a file renamed to a name no group matches.
                self._dirty.update(tf.path for tf in self._files.values() if not tf.matched)
        self._wake.set()

    def _on_overflow(self) -> None:
        self._full = True
        self._relist.update(g.directory for g in self._groups)
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        next_scan = time.monotonic() + cfg.pollInterval / 1000
        self._next_pos = time.monotonic() + cfg.writePosInterval / 1000
        while not self._stopping.is_set():
            self._wake.clear()
            now = time.monotonic()
            if now >= next_scan:
                self._full = True
                self.rescans += 1
                next_scan = now + cfg.pollInterval / 1000
            try:
                more, blocked = await self._pass()
            except Exception as e:
                # Keep following the other files; the failing one is retried next pass.
                self._warn("pass", "Source %s: error while reading files: %r", self.name, e)
                log.debug("Source %s: read error.", self.name, exc_info=True)
                self.counter.EventReadFail += 1
                more, blocked = False, False
            await self._positions_due(loop)
            now = time.monotonic()
            if blocked:
                self._backoffs += 1
                delay = min(self._backoffs * cfg.backoffSleepIncrement, cfg.maxBackoffSleep) / 1000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            self._backoffs = 0
            if more:
                continue
            self._close_idle(now)
            deadline = min(next_scan, self._next_pos)
            ml = [tf.ml_deadline for tf in self._files.values() if tf.ml_deadline is not None]
            if ml:
                deadline = min(deadline, min(ml))
            if self._inotify is not None:
                self._inotify.arm()
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(deadline - now, 0.001))

    async def _positions_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the position file if writePosInterval has passed since the last write.

        Called between passes and after every committed batch: one pass over a large
        backlog commits many batches, and a crash must re-read at most one interval's
        worth of them, not the whole pass.
        """
        now = time.monotonic()
        if now >= self._next_pos:
            self._next_pos = now + self.config.writePosInterval / 1000
            await self._save_positions(loop)

    async def _save_positions(self, loop: asyncio.AbstractEventLoop) -> None:
        data = dump_positions(list(self._files.values()))
        if data == self._pos_written:
            return
        try:
            await loop.run_in_executor(self._executor, _write_file_atomic, self._pos_path, data)
            self._pos_written = data
            self.clear_problem("positions")
        except OSError as e:
            log.error("Source %s: cannot write %s: %s", self.name, self._pos_path, e)
            self.report_problem(f"cannot save positions to {self._pos_path}: {e}", "positions")

    def _write_positions(self) -> None:
        data = dump_positions(list(self._files.values()))
        if data != self._pos_written:
            _write_file_atomic(self._pos_path, data)
            self._pos_written = data

    def _close_idle(self, now: float) -> None:
        timeout = self.config.idleTimeout / 1000
        open_files = []
        for tf in list(self._files.values()):
            if tf.fd is None:
                continue
            if tf.caught_up and tf.ml_deadline is None and now - tf.last_active >= timeout:
                tf.close()
                if not tf.matched:
                    self._forget(tf)
            else:
                open_files.append(tf)
        if len(open_files) > self.max_open:
            closable = [tf for tf in open_files if tf.matched and tf.caught_up]
            closable.sort(key=lambda tf: tf.last_active)
            for tf in closable[: len(open_files) - self.max_open]:
                tf.close()

    def _forget(self, tf: TailFile) -> None:
        tf.close()
        self._files.pop(tf.inode, None)
        if self._by_path.get(tf.path) is tf:
            del self._by_path[tf.path]

    # -- matching files -----------------------------------------------------------------

    def _list(self, g: _Group, force: bool) -> None:
        """Refresh `g.matched` when the directory changed (or always, without the cache)."""
        try:
            mtime = os.stat(g.directory).st_mtime
        except OSError as err:
            # A directory that does not exist yet is waited for, as Flume does; one that
            # cannot be read is a problem /health shows.
            if err.errno == errno.ENOENT:
                self.clear_problem("dir:" + g.directory)
            else:
                self.report_problem(f"cannot read directory {g.directory}: {err}",
                                    "dir:" + g.directory)  # fmt: skip
            g.matched = {}
            g.mtime = -1.0
            return
        now = time.time()
        if (
            self.config.cachePatternMatching
            and not force
            and mtime == g.mtime
            and now - mtime > DIR_MTIME_SLACK
        ):
            return
        real = os.path.realpath(g.directory)
        if g.real is None:
            g.real = real
        elif real != g.real:
            self._warn(
                "moved:" + g.directory,
                "Source %s: filegroup %s: %s now resolves to %s, not %s as before (a "
                "directory on its path was replaced by a symlink?); not listed until it "
                "resolves back.",
                self.name,
                g.name,
                g.directory,
                real,
                g.real,
            )
            g.matched = {}
            g.mtime = -1.0
            return
        matched = {}
        links: list[str] = []
        try:
            with os.scandir(g.directory) as it:
                for e in it:
                    if g.regex.fullmatch(e.name):
                        if e.is_symlink():
                            links.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            matched[e.path] = e.inode()
            self.clear_problem("dir:" + g.directory)
        except OSError as e:
            log.warning("Source %s: cannot list %s: %s", self.name, g.directory, e)
            self.report_problem(f"cannot read directory {g.directory}: {e}", "dir:" + g.directory)
        if links:
            self._warn(
                "links:" + g.directory,
                "Source %s: filegroup %s: skipped %d symbolic link(s) matching its pattern "
                "(links are never followed), e.g. %s",
                self.name,
                g.name,
                len(links),
                links[0],
            )
        g.matched = matched
        g.mtime = mtime
        g.listed_at = now

    def _scan(
        self, initial: bool = False, positions: dict[int, tuple[int, str]] | None = None
    ) -> None:
        """Bring the set of followed files up to date with the directories."""
        relist, self._relist = self._relist, set()
        if self._inotify is not None:
            for g in self._groups:
                if not self._inotify.watching(g.directory) and self._inotify.watch(g.directory):
                    relist.add(g.directory)
        seen: dict[int, tuple[str, str]] = {}
        for g in self._groups:
            self._list(g, force=initial or g.directory in relist)
            for path, inode in g.matched.items():
                seen[inode] = (path, g.name)
        for inode, (path, group) in seen.items():
            tf = self._files.get(inode)
            if tf is None:
                pos = 0
                if positions is not None and inode in positions:
                    pos = positions[inode][0]
                elif initial and self.config.skipToEnd:
                    with contextlib.suppress(OSError):
                        pos = os.stat(path).st_size
                tf = TailFile(path, inode, pos, group)
                self._files[inode] = tf
                self._set_headers(tf)
                if not initial:
                    log.info("Source %s: following new file %s.", self.name, path)
            elif tf.path != path or not tf.matched:
                log.info("Source %s: %s was renamed to %s.", self.name, tf.path, path)
                if self._by_path.get(tf.path) is tf:
                    del self._by_path[tf.path]
                tf.path, tf.group, tf.matched = path, group, True
                self._set_headers(tf)
            self._by_path[path] = tf
        for tf in list(self._files.values()):
            if tf.inode in seen:
                continue
            if tf.matched:
                # Renamed to a name no group matches, or deleted: read what is left
                # through the open descriptor, then forget it.
                tf.matched = False
                if self._by_path.get(tf.path) is tf:
                    del self._by_path[tf.path]
                if tf.fd is None:
                    self._forget(tf)
        if initial and positions:
            self._resume_rotated(positions, seen)

    def _resume_rotated(
        self, positions: dict[int, tuple[int, str]], seen: dict[int, tuple[str, str]]
    ) -> None:
        """Files in the position file that were renamed out of the match while the agent
        was down: find them by inode in their directory and read them to their end."""
        wanted: dict[str, dict[int, int]] = {}
        for inode, (pos, path) in positions.items():
            if inode not in seen:
                wanted.setdefault(os.path.dirname(path), {})[inode] = pos
        for directory, inodes in wanted.items():
            try:
                with os.scandir(directory) as it:
                    found = [(e.path, e.inode()) for e in it if e.inode() in inodes]
            except OSError:
                continue
            for path, inode in found:
                pos = inodes[inode]
                try:
                    if os.stat(path).st_size < pos:
                        continue  # not the file the position was for (inode reused)
                except OSError:
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError:
                    continue
                tf = TailFile(path, inode, pos, "")
                tf.fd, tf.matched = fd, False
                old = [g for g in self._groups if g.directory == directory]
                tf.group = old[0].name if old else ""
                self._set_headers(tf)
                self._files[inode] = tf
                self._dirty.add(path)
                log.info("Source %s: finishing rotated file %s.", self.name, path)

    def _set_headers(self, tf: TailFile) -> None:
        h = dict(self._static.get(tf.group, {}))
        if self.config.fileHeader:
            h[self.config.fileHeaderKey] = tf.path
        tf.headers = h

    # -- reading ------------------------------------------------------------------------

    async def _pass(self) -> tuple[bool, bool]:
        """Read every file that may have grown. Returns (more to read, channel blocked)."""
        self.passes += 1
        if self._full or self._relist:
            self._scan()
        if self._full:
            todo = list(self._files.values())
        else:
            todo = [
                tf
                for tf in self._files.values()
                if tf.path in self._dirty or not tf.caught_up or tf.ml_deadline is not None
            ]
        self._full = False
        self._dirty.clear()
        if len(todo) > 1:
            todo.sort(key=_mtime)
        more = False
        for tf in todo:
            if self._stopping.is_set():
                return True, False
            if self._files.get(tf.inode) is not tf:
                continue
            state = await self._drain(tf)
            if state == "blocked":
                return True, True
            if state == "more":
                more = True
        return more, False

    def _warn(self, key: str, msg: str, *args: object) -> None:
        """Log a warning about `key` at most once a minute (a broken file is retried at
        every pass)."""
        limiter = self._warned.get(key)
        if limiter is None:
            limiter = self._warned[key] = RateLimitedLog(log, RATE_LIMIT)
        limiter.warn(msg, *args)

    def _open(self, tf: TailFile) -> bool:
        """Open (or re-open after idle) `tf`; False if its path holds another file now."""
        try:
            fd = os.open(tf.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            self._relist.add(os.path.dirname(tf.path))
            return False
        except OSError as e:
            self.counter.EventReadFail += 1
            self._warn(tf.path, "Source %s: cannot open %s: %s", self.name, tf.path, e)
            return False
        if os.fstat(fd).st_ino != tf.inode:
            os.close(fd)
            self._relist.add(os.path.dirname(tf.path))
            return False
        tf.fd = fd
        return True

    async def _drain(self, tf: TailFile) -> str:
        """Emit `tf`'s complete lines, batch by batch. Returns "done", "more" (maxBatchCount
        reached) or "blocked" (the channel refused; `tf.pos` is where it stopped)."""
        loop = asyncio.get_running_loop()
        if tf.fd is None:
            try:
                st = os.stat(tf.path)
            except OSError:
                return "done"
            if st.st_ino != tf.inode or (st.st_size == tf.pos and tf.ml_deadline is None):
                return "done"
            if not self._open(tf):
                return "done"
        assert tf.fd is not None
        batches = 0
        want = CHUNK
        while True:
            size = os.fstat(tf.fd).st_size
            if size < tf.pos:
                log.info(
                    "Source %s: %s shrank below position %d (truncated); reading from 0.",
                    self.name,
                    tf.path,
                    tf.pos,
                )
                tf.pos = 0
                tf.ml_deadline = None
            if size == tf.pos:
                tf.caught_up = True
                return "done"
            if batches >= self._max_batches or self._stopping.is_set():
                tf.caught_up = False
                return "more"
            tf.caught_up = False
            start = tf.pos
            data = await loop.run_in_executor(
                self._executor, os.pread, tf.fd, min(want, size - start), start
            )
            if not data:
                tf.caught_up = True
                return "done"
            tf.last_active = time.monotonic()
            at_eof = start + len(data) >= size
            end = data.rfind(b"\n")
            if end < 0:
                if not at_eof and want < MAX_LINE:
                    want *= 2  # one line longer than the chunk
                    continue
                if at_eof and len(data) < MAX_LINE:
                    tf.caught_up = True  # a partial line: wait for its newline
                    return "done"
                log.warning(
                    "Source %s: %s: a line longer than %d bytes at %d is cut there.",
                    self.name,
                    tf.path,
                    MAX_LINE,
                    start,
                )
                self.counter.EventReadFail += 1
                end = len(data)
                data += b"\n"
            want = CHUNK
            if self._ml is None:
                state, batches = await self._emit_lines(tf, data, end, batches)
            else:
                state, batches = await self._emit_records(tf, data, end, batches, at_eof, size)
            if state != "ok":
                return state

    async def _commit(self, events: list[Event]) -> int | None:
        """Commit one batch. Returns None when committed, else how many leading events
        the channel took before refusing (the rest must be offered again); 0 without
        trying once the source is stopping."""
        if self._stopping.is_set():
            return 0
        c = self.counter
        n = len(events)
        c.EventReceivedCount += n
        c.AppendBatchReceivedCount += 1
        try:
            await self.processor.process_batch(events)
        except ChannelFullError as e:
            c.ChannelWriteFail += 1
            c.EventAcceptedCount += e.accepted
            log.debug("Source %s: channel full: %s", self.name, e)
            return e.accepted
        except ChannelError as e:
            c.ChannelWriteFail += 1
            log.warning("Source %s: channel refused a batch: %s", self.name, e)
            return 0
        c.EventAcceptedCount += n
        c.AppendBatchAcceptedCount += 1
        return None

    def _events(self, tf: TailFile, bodies: list[bytes], offsets: list[int] | None) -> list[Event]:
        h = tf.headers
        if offsets is not None:
            return [
                Event(b, {**h, "byteoffset": str(o)}) for b, o in zip(bodies, offsets, strict=True)
            ]
        if h:
            return [Event(b, h.copy()) for b in bodies]
        return [Event(b) for b in bodies]

    async def _emit_lines(
        self, tf: TailFile, data: bytes, end: int, batches: int
    ) -> tuple[str, int]:
        """One event per line of `data[:end]` (the part ending at its last newline)."""
        block = data[:end]
        lines = block.split(b"\n")
        has_cr = b"\r" in block
        bsize = self.config.batchSize
        for i in range(0, len(lines), bsize):
            raw = lines[i : i + bsize]
            nbytes = sum(map(len, raw)) + len(raw)
            bodies = [b[:-1] if b[-1:] == b"\r" else b for b in raw] if has_cr else raw
            offsets = None
            if self.config.byteOffsetHeader:
                offsets = list(itertools.accumulate((len(b) + 1 for b in raw[:-1]), initial=tf.pos))
            accepted = await self._commit(self._events(tf, bodies, offsets))
            if accepted is not None:
                tf.pos += sum(map(len, raw[:accepted])) + accepted
                return "blocked", batches
            tf.pos += nbytes
            batches += 1
            await self._positions_due(asyncio.get_running_loop())
            if batches >= self._max_batches and i + bsize < len(lines):
                tf.caught_up = False
                return "more", batches
        return "ok", batches

    async def _emit_records(
        self, tf: TailFile, data: bytes, end: int, batches: int, at_eof: bool, size: int
    ) -> tuple[str, int]:
        """Multiline: a line matching `multiline.pattern` starts a record; the others join
        the record before them. The last record is held back until a new record starts or
        `multiline.timeout` passes without the file growing."""
        cfg = self.config
        assert self._ml is not None
        match = self._ml.match
        max_lines, max_bytes = cfg.multiline_maxLines, cfg.multiline_maxBytes
        records: list[tuple[list[bytes], int]] = []  # (lines, raw bytes)
        cur: list[bytes] = []
        cur_bytes = 0
        for line in data[:end].split(b"\n"):
            n = len(line) + 1
            if cur and (match(line) or len(cur) >= max_lines or cur_bytes + n > max_bytes):
                records.append((cur, cur_bytes))
                cur, cur_bytes = [], 0
            cur.append(line[:-1] if line[-1:] == b"\r" else line)
            cur_bytes += n
        now = time.monotonic()
        if cur:
            if not at_eof:
                if not records:
                    records.append((cur, cur_bytes))  # one record fills the chunk: progress
                    cur = []
                # else: read again from this record's start, with what follows it
            elif tf.ml_deadline is not None and tf.ml_size == size:
                if now >= tf.ml_deadline:
                    records.append((cur, cur_bytes))
                    cur = []
            else:
                # Wait for the next line (or the timeout) to know the record is whole.
                tf.ml_size = size
                tf.ml_deadline = now + cfg.multiline_timeout / 1000
        if not cur:
            tf.ml_deadline = None
        bsize = cfg.batchSize
        for i in range(0, len(records), bsize):
            chunk = records[i : i + bsize]
            bodies = [b"\n".join(r[0]) for r in chunk]
            offsets = None
            if cfg.byteOffsetHeader:
                offsets = list(itertools.accumulate((r[1] for r in chunk[:-1]), initial=tf.pos))
            accepted = await self._commit(self._events(tf, bodies, offsets))
            if accepted is not None:
                tf.pos += sum(r[1] for r in chunk[:accepted])
                return "blocked", batches
            tf.pos += sum(r[1] for r in chunk)
            batches += 1
            await self._positions_due(asyncio.get_running_loop())
            if batches >= self._max_batches and i + bsize < len(records):
                tf.caught_up = False
                return "more", batches
        if cur and at_eof:
            tf.caught_up = True
            return "done", batches
        return "ok", batches


def _mtime(tf: TailFile) -> float:
    try:
        if tf.fd is not None:
            return os.fstat(tf.fd).st_mtime
        return os.stat(tf.path).st_mtime
    except OSError:
        return 0.0
