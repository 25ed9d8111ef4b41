"""Sink `hdfs` (Flume's org.apache.flume.sink.hdfs.HDFSEventSink): events into bucketed,
rolled files on a local or mounted filesystem, or on HDFS through WebHDFS/HttpFS.

`hdfs.path` picks the target by its scheme: `/dir` or `file:///dir` (local files),
`webhdfs://namenode:9870/dir`, `swebhdfs://namenode:9871/dir` (TLS), or
`hdfs://namenode:8020/dir` (WebHDFS on `hdfs.webhdfs.port`, 9870). `hdfs.path` and
`hdfs.filePrefix` take Flume's escapes (flumed/escapes.py); events are grouped by the
resulting directory and name (a bucket), and each bucket writes one file at a time:
`<inUsePrefix><filePrefix>.<counter><fileSuffix or codec extension><inUseSuffix>` while
open, renamed without the in-use parts when it rolls (rollInterval seconds after it
opened, rollSize bytes of bodies, rollCount events, idleTimeout seconds without a write,
the least recently used of more than maxOpenFiles buckets, or the sink stopping).

Delivery (one take per call, see BatchSink): the batch is placed and formatted on the
loop, then the store writes every file of the batch in one go (one thread job locally,
fsync'ed; WebHDFS calls acknowledged) before the take commits; a failure undoes the
batch's writes and rolls the take back. See docs/hdfs.md for keys and differences.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import posixpath
import re
import time
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from flumed import escapes, registry
from flumed.config.keys import key, prefix
from flumed.counters import SinkCounter
from flumed.errors import ComponentStartError, DeliveryError
from flumed.event import Event
from flumed.lifecycle import stop_task
from flumed.logs import RateLimitedLog
from flumed.serializers.base import (
    parse_serializer_config,
    serializer_class,
    serializer_problems,
)
from flumed.sinks._hdfs_formats import Codec, codec_by_name, good_length, make_format, now_ms
from flumed.sinks._hdfs_stores import (
    Finishes,
    HdfsFile,
    LocalStore,
    StoreError,
    WebHdfsStore,
    Writes,
    in_use_matcher,
)
from flumed.sinks.base import BatchSink

log = logging.getLogger("flumed.sinks.hdfs")


@dataclass(frozen=True, slots=True)
class Target:
    """Where `hdfs.path` points: a local directory template, or a WebHDFS server URL and
    the directory template on it."""

    local: bool
    url: str  # "" for local; http(s)://host:port for WebHDFS
    path: str  # the directory template (escapes not yet applied)


def parse_target(path: str, webhdfs_port: int) -> Target:
    """Split `hdfs.path` by scheme. Raises ValueError naming what is wrong."""
    if path.startswith("/"):
        return Target(True, "", path)
    u = urlsplit(path)
    scheme = u.scheme.lower()
    if scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file:// path with a host ({u.netloc}) is not local")
        return Target(True, "", u.path or "/")
    if scheme in ("webhdfs", "swebhdfs", "hdfs"):
        if not u.hostname:
            raise ValueError(
                f"{path!r} names no namenode; write {scheme}://namenode:port/dir "
                "(flumed reads no core-site.xml for fs.defaultFS)"
            )
        if not u.path.startswith("/"):
            raise ValueError(f"{path!r}: the directory must be absolute")
        if scheme == "hdfs":
            port, http = webhdfs_port, "http"
        else:
            http = "https" if scheme == "swebhdfs" else "http"
            port = u.port or (9871 if http == "https" else 9870)
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return Target(False, f"{http}://{host}:{port}", u.path)
    raise ValueError(
        f"{path!r}: expected an absolute local path, file://, webhdfs://, swebhdfs:// or hdfs://"
    )


@dataclass(frozen=True, slots=True)
class HDFSEventSinkConfig:
    path: str = key(name="hdfs.path", doc="Directory, with escapes; its scheme picks the store.")
    filePrefix: str = key("FlumeData", name="hdfs.filePrefix", doc="May hold escapes.")
    fileSuffix: str = key("", name="hdfs.fileSuffix", doc="Default: the codec's extension.")
    inUsePrefix: str = key("", name="hdfs.inUsePrefix")
    inUseSuffix: str = key(".tmp", name="hdfs.inUseSuffix")
    emptyInUseSuffix: bool = key(False, name="hdfs.emptyInUseSuffix", doc="No in-use suffix.")
    rollInterval: float = key(30.0, name="hdfs.rollInterval", ge=0, doc="Seconds; 0: never.")
    rollSize: int = key(1024, name="hdfs.rollSize", ge=0, doc="Bytes of bodies; 0: never.")
    rollCount: int = key(10, name="hdfs.rollCount", ge=0, doc="Events; 0: never.")
    idleTimeout: float = key(0.0, name="hdfs.idleTimeout", ge=0, doc="Seconds; 0: never.")
    batchSize: int = key(100, name="hdfs.batchSize", ge=1)
    codeC: str = key("", name="hdfs.codeC", doc="gzip, bzip2, deflate, snappy, lz4, zstd.")
    fileType: Literal["SequenceFile", "DataStream", "CompressedStream"] = key(
        "SequenceFile", name="hdfs.fileType"
    )
    writeFormat: Literal["Writable", "Text"] = key("Writable", name="hdfs.writeFormat")
    sequenceFileCompression: Literal["NONE", "RECORD", "BLOCK"] = key(
        "BLOCK",
        name="hdfs.sequenceFile.compressionType",
        doc="flumed: SequenceFile compression when hdfs.codeC is set (Flume: BLOCK).",
    )
    maxOpenFiles: int = key(5000, name="hdfs.maxOpenFiles", ge=1)
    minBlockReplicas: int = key(0, name="hdfs.minBlockReplicas", ge=0, doc="Accepted; unused.")
    callTimeout: int = key(30000, name="hdfs.callTimeout", ge=1, doc="ms per WebHDFS call.")
    closeTries: int = key(0, name="hdfs.closeTries", ge=0, doc="Rename attempts; 0: forever.")
    retryInterval: float = key(180.0, name="hdfs.retryInterval", ge=0, doc="Seconds.")
    threadsPoolSize: int = key(10, name="hdfs.threadsPoolSize", ge=1, doc="Accepted; unused.")
    rollTimerPoolSize: int = key(1, name="hdfs.rollTimerPoolSize", ge=1, doc="Accepted; unused.")
    kerberosPrincipal: str = key("", name="hdfs.kerberosPrincipal", doc="Refused.")
    kerberosKeytab: str = key("", name="hdfs.kerberosKeytab", doc="Refused.")
    proxyUser: str = key("", name="hdfs.proxyUser", doc="WebHDFS doas.")
    round: bool = key(False, name="hdfs.round")
    roundValue: int = key(1, name="hdfs.roundValue", ge=1)
    roundUnit: Literal["second", "minute", "hour"] = key("second", name="hdfs.roundUnit")
    timeZone: str = key("", name="hdfs.timeZone", doc="Java zone ID; default local time.")
    useLocalTimeStamp: bool = key(False, name="hdfs.useLocalTimeStamp")
    fsync: bool = key(True, name="hdfs.fsync", doc="flumed: fsync local files every batch.")
    webhdfsPort: int = key(9870, name="hdfs.webhdfs.port", ge=1, le=65535, doc="For hdfs://.")
    httpfs: bool = key(False, name="hdfs.webhdfs.httpfs", doc="HttpFS: no datanode redirect.")
    webhdfsUser: str = key("", name="hdfs.webhdfs.user", doc="user.name; default: this user.")
    webhdfsCaFile: str = key("", name="hdfs.webhdfs.cafile", doc="CA file for swebhdfs.")
    serializerTable: dict[str, Any] = prefix(
        "serializer", doc="TEXT | HEADER_AND_TEXT | AVRO_EVENT | a class; and its keys."
    )

    @property
    def serializer(self) -> str:
        return str(self.serializerTable.get("", "TEXT"))

    @property
    def serializerKeys(self) -> dict[str, Any]:
        return {k: v for k, v in self.serializerTable.items() if k}

    @property
    def in_use_suffix(self) -> str:
        return "" if self.emptyInUseSuffix else self.inUseSuffix

    def codec(self) -> Codec | None:
        return codec_by_name(self.codeC) if self.codeC else None

    def target(self) -> Target:
        return parse_target(self.path, self.webhdfsPort)

    def template(self) -> escapes.Template:
        return escapes.Template(
            self.target().path.rstrip("/") + "/" + self.filePrefix,
            time_zone=self.timeZone or None,
            round=self.round,
            round_value=self.roundValue,
            round_unit=self.roundUnit,
            use_local_timestamp=self.useLocalTimeStamp,
            safe=True,
        )

    def check(self) -> list[str]:
        out: list[str] = []
        if self.kerberosPrincipal or self.kerberosKeytab:
            out.append(
                "keys 'hdfs.kerberosPrincipal'/'hdfs.kerberosKeytab': Kerberos (SPNEGO) is not "
                "supported by flumed; use simple authentication (hdfs.webhdfs.user, "
                "hdfs.proxyUser) or an HttpFS gateway that authenticates for you"
            )
        try:
            target = self.target()
        except ValueError as e:
            return [*out, f"key 'hdfs.path': {e}"]
        try:
            self.template()
        except ValueError as e:
            out.append(f"key 'hdfs.path'/'hdfs.filePrefix'/'hdfs.round*'/'hdfs.timeZone': {e}")
        del target
        try:
            self.codec()
        except ValueError as e:
            out.append(f"key 'hdfs.codeC': {e}")
        if self.fileType == "CompressedStream" and not self.codeC:
            out.append("key 'hdfs.codeC': fileType CompressedStream needs a codec")
        if self.fileType != "SequenceFile":
            out += serializer_problems(self.serializer, self.serializerKeys, "serializer")
        return out


class HDFSSinkCounter(SinkCounter):
    NAMES = (
        *SinkCounter.NAMES,
        "EventEscapeFailCount",
        "FileRenameFailCount",
        "FilesRecoveredCount",
    )
    EventEscapeFailCount: int
    FileRenameFailCount: int
    FilesRecoveredCount: int


class _Bucket:
    """One directory + name prefix: its file counter and its open file (if any)."""

    __slots__ = ("counter", "dir", "file", "key", "leaf")

    def __init__(self, key: str, directory: str, leaf: str, counter: int) -> None:
        self.key = key
        self.dir = directory
        self.leaf = leaf
        self.counter = counter
        self.file: HdfsFile | None = None


class _Retry:
    __slots__ = ("at", "file", "tail", "tries")

    def __init__(self, f: HdfsFile, tail: bytes, at: float) -> None:
        self.file = f
        self.tail = tail
        self.tries = 1
        self.at = at


class HDFSEventSink(BatchSink):
    """Takes a batch, appends it to its buckets' files, commits once they hold it.

    `deliver()` and the roll timer hold one lock, so the files change in one place at a
    time. Raises DeliveryError (the take rolls back) when an event cannot be placed (a time
    escape without a timestamp) or a write failed.
    """

    Config = HDFSEventSinkConfig
    counter_class: ClassVar[type[SinkCounter]] = HDFSSinkCounter
    config: HDFSEventSinkConfig
    counter: HDFSSinkCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        cfg: HDFSEventSinkConfig = config
        self.target = cfg.target()
        self.template = cfg.template()
        self.codec = cfg.codec()
        if cfg.fileType != "SequenceFile":
            self.serializer_cls = serializer_class(cfg.serializer)
            self.serializer_config = parse_serializer_config(
                self.serializer_cls, cfg.serializerKeys, f"sink {name}: key 'serializer'"
            )
        self.ext = cfg.fileSuffix or (
            self.codec.extension if self.codec and cfg.fileType != "DataStream" else ""
        )
        self.store: LocalStore | WebHdfsStore
        if self.target.local:
            self.store = LocalStore(name, cfg.fsync, cfg.maxOpenFiles)
        else:
            self.store = WebHdfsStore(
                name,
                self.target.url,
                cfg.webhdfsUser or _process_user(),
                cfg.proxyUser,
                cfg.httpfs,
                cfg.callTimeout / 1000,
                cfg.webhdfsCaFile,
            )
        self.base = _base_dir(self.template)
        self.buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.retries: list[_Retry] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._first_counter = 0
        # One limiter per kind of trouble, so that one does not hide another.
        self._warn_escape = RateLimitedLog(log)
        self._warn_write = RateLimitedLog(log)
        self._warn_rename = RateLimitedLog(log)
        self._warn_timer = RateLimitedLog(log)
        if cfg.fileType == "DataStream" and cfg.codeC:
            log.warning(
                "Sink %s: hdfs.codeC is ignored with fileType DataStream (as in Flume, the data "
                "is not compressed); use CompressedStream.",
                name,
            )

    @property
    def batch_size(self) -> int:
        return self.config.batchSize

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # %[localhost] etc. may need DNS: look them up once, off the loop.
        await loop.run_in_executor(None, escapes.host_values)
        if self.target.local:
            try:
                os.makedirs(self.base, exist_ok=True)
            except OSError as e:
                raise ComponentStartError(
                    f"sink {self.name}: key 'hdfs.path': cannot create {self.base}: {e.strerror}"
                ) from e
        await self.store.start()
        self._first_counter = now_ms()
        self._stopping.clear()
        self._timer = asyncio.create_task(self._roll_timer(), name=f"hdfs-{self.name}-roll")
        if self.config.in_use_suffix or self.config.inUsePrefix:
            self._recovery = asyncio.create_task(self._recover(), name=f"hdfs-{self.name}-recover")
        await super().start()

    async def stop(self) -> None:
        """Finish (close and rename) every open file; called after the runner stopped."""
        self._stopping.set()
        await stop_task(self._recovery, who=f"sink {self.name} recovery")
        await stop_task(self._timer, who=f"sink {self.name} roll timer")
        self._recovery = self._timer = None
        async with self._lock:
            finishes = [self._detach(b) for b in self.buckets.values() if b.file]
            finishes += [(r.file, r.tail) for r in self.retries]
            self.retries.clear()
            self.buckets.clear()
            if finishes:
                failed = await self.store.finish(finishes)
                self.counter.ConnectionClosedCount += len(finishes) - len(failed)
                for f, why in failed:
                    log.error(
                        "Sink %s: could not finish %s at stop (%s); it is finished at the next "
                        "start.",
                        self.name,
                        f.tmp_path,
                        why,
                    )
        await self.store.close()
        await super().stop()

    async def _recover(self) -> None:
        """Finish the in-use files a previous run left (crash, kill -9)."""
        cfg = self.config
        match = in_use_matcher(
            cfg.inUsePrefix,
            cfg.in_use_suffix,
            _leaf_regex(cfg.filePrefix),
            self.ext,
            self._first_counter,
        )
        depth = self.template.text[len(self.base) :].count("/") + 1
        serializer = ""
        if cfg.fileType != "SequenceFile":
            serializer = registry.canonical("serializers", cfg.serializer) or ""
        newline = bool(getattr(getattr(self, "serializer_config", None), "appendNewline", True))
        cut = good_length(cfg.fileType, serializer, newline, self.codec)
        try:
            n = await self.store.recover(self.base, depth, match, cut)
        except Exception as e:  # noqa: BLE001 - recovery is best effort; the run goes on
            log.warning("Sink %s: recovery of in-use files stopped: %s", self.name, e)
            return
        self.counter.FilesRecoveredCount += n

    # -- placing a batch ---------------------------------------------------------------------
    def _names(self, leaf: str, counter: int) -> tuple[str, str]:
        cfg = self.config
        final = f"{leaf}.{counter}{self.ext}"
        return f"{cfg.inUsePrefix}{final}{cfg.in_use_suffix}", final

    def _new_file(self, b: _Bucket, now: float) -> HdfsFile:
        cfg = self.config
        serializer = None
        if cfg.fileType != "SequenceFile":
            serializer = self.serializer_cls(self.serializer_config)
        fmt = make_format(
            cfg.fileType, serializer, self.codec, cfg.writeFormat, cfg.sequenceFileCompression
        )
        b.counter = max(b.counter + 1, now_ms())
        return HdfsFile(b.dir, b.leaf, b.counter, fmt, self._names, now)

    def _bucket(self, lookup: str) -> _Bucket:
        b = self.buckets.get(lookup)
        if b is None:
            d, _, leaf = lookup.rpartition("/")
            d = posixpath.normpath(d) if d else "/"
            if not (d == self.base or d.startswith(self.base.rstrip("/") + "/")):
                # Cannot happen with sanitized header values; refuse rather than write there.
                raise DeliveryError(
                    f"Sink {self.name}: {lookup!r} is outside {self.base}", retriable=False
                )
            b = self.buckets[lookup] = _Bucket(lookup, d, leaf or "_", 0)
        else:
            self.buckets.move_to_end(lookup)
        return b

    def _detach(self, b: _Bucket) -> tuple[HdfsFile, bytes]:
        f = b.file
        assert f is not None
        b.file = None
        return f, f.fmt.end()

    async def deliver(self, events: list[Event]) -> None:
        """Place, format and write one batch; returns once the store holds it.

        Raises:
            DeliveryError: an event has no timestamp for a time escape (counted in
                EventEscapeFailCount), or the store failed (EventWriteFail); the take
                rolls back.
        """
        cfg = self.config
        ts = now_ms()
        try:
            lookups = self.template.render_many([e.headers for e in events], ts)
        except escapes.EscapeError as e:
            self.counter.EventEscapeFailCount += 1
            self._warn_escape.warn("Sink %s: batch rolled back: %s.", self.name, e)
            raise DeliveryError(f"Sink {self.name}: {e}") from e
        first = lookups[0]
        if lookups.count(first) == len(lookups):  # one bucket (the usual case): no grouping
            groups = {first: events}
        else:
            groups = {}
            for lk, ev in zip(lookups, events, strict=True):
                g = groups.get(lk)
                if g is None:
                    groups[lk] = [ev]
                else:
                    g.append(ev)
        async with self._lock:
            now = time.monotonic()
            writes: Writes = []
            finishes: Finishes = []
            # New state, applied only once the store holds the batch.
            counts: list[tuple[HdfsFile, int, int, int]] = []
            current: list[tuple[_Bucket, HdfsFile | None]] = []
            owner: dict[int, _Bucket] = {}
            for lk, evs in groups.items():
                b = self._bucket(lk)
                f = b.file
                i, n = 0, len(evs)
                while i < n:
                    if f is None:
                        f = self._new_file(b, now)
                    owner[id(f)] = b
                    if not f.exists:  # new, or its creation was not answered
                        head = f.fmt.begin()
                        cnt, nbytes = 0, 0
                    else:
                        head = b""
                        cnt, nbytes = f.events, f.body_bytes
                    j, nbytes, full = self._fill(evs, i, cnt, nbytes)
                    if j > i:
                        cnt += j - i
                        data = head + f.fmt.batch(evs[i:j] if i or j < n else evs, ts)
                        writes.append((f, data))
                        counts.append((f, cnt, nbytes, len(data)))
                        i = j
                    if full:
                        finishes.append((f, f.fmt.end()))
                        f = None
                current.append((b, f))
            # Least recently used buckets past maxOpenFiles are closed with this batch.
            excess = len(self.buckets) - cfg.maxOpenFiles
            evicted: list[_Bucket] = []
            if excess > 0:
                for lk, b in self.buckets.items():
                    if len(evicted) >= excess:
                        break
                    if lk not in groups:
                        evicted.append(b)
            finishes += self._evict_now(evicted)
            try:
                failed = await self.store.apply(writes, finishes)
            except StoreError as e:
                self.counter.EventWriteFail += 1
                for bad in e.abandon:
                    self._abandon(bad)
                for f, _ in writes:
                    if not f.exists and f.uncertain:
                        # Its CREATE may have landed and could not be undone: the next
                        # batch goes to the same name, which is then deleted and made again.
                        owner[id(f)].file = f
                self._warn_write.warn("Sink %s: batch rolled back: %s", self.name, e)
                raise DeliveryError(f"Sink {self.name}: {e}", retriable=e.retriable) from e
            for f, cnt, nbytes, size in counts:
                if f.events == 0 and f.size == 0:
                    self.counter.ConnectionCreatedCount += 1
                f.events, f.body_bytes = cnt, nbytes
                f.size += size
                f.last_write = now
            for b, f in current:
                if b.file is not f:
                    b.file = f
                    self._wake.set()  # a new file: its roll deadline may be the nearest
            for b in evicted:
                self.buckets.pop(b.key, None)
            self._finished(finishes, failed, now)

    def _fill(self, evs: list[Event], i: int, cnt: int, nbytes: int) -> tuple[int, int, bool]:
        """How far from `i` the events go into a file holding `cnt` events and `nbytes`
        bytes of bodies: (end index, bytes then, whether the file is then full). As Flume,
        an event goes in while the file is below rollCount and below rollSize."""
        cfg = self.config
        n = len(evs)
        roll_count, roll_size = cfg.rollCount, cfg.rollSize
        if (roll_count and cnt >= roll_count) or (roll_size and nbytes >= roll_size):
            return i, nbytes, True
        j = n if not roll_count else min(n, i + roll_count - cnt)
        if not roll_size:
            return j, nbytes, bool(roll_count) and cnt + (j - i) >= roll_count
        sizes = list(accumulate([len(e.body) for e in evs[i:j]]))
        if not sizes or nbytes + sizes[-1] < roll_size:
            total = nbytes + (sizes[-1] if sizes else 0)
            return j, total, bool(roll_count) and cnt + (j - i) >= roll_count
        # The first event that brings the file to rollSize is the last one in it.
        k = bisect_left(sizes, roll_size - nbytes)
        return i + k + 1, nbytes + sizes[k], True

    def _evict_now(self, evicted: list[_Bucket]) -> Finishes:
        out: Finishes = []
        for b in evicted:
            if b.file is not None and b.file.exists:
                out.append((b.file, b.file.fmt.end()))
        return out

    def _abandon(self, f: HdfsFile) -> None:
        """A file that cannot be cut back: finish it later, new batches go to a new file."""
        for b in self.buckets.values():
            if b.file is f:
                b.file = None
        if f.exists:
            self.retries.append(_Retry(f, b"", time.monotonic()))
            self._wake.set()

    def _finished(self, finishes: Finishes, failed: list[tuple[HdfsFile, str]], now: float) -> None:
        bad = {id(f): why for f, why in failed}
        for f, _tail in finishes:
            if id(f) in bad:
                self._rename_failed(f, b"", bad[id(f)], now)
            elif f.exists:
                self.counter.ConnectionClosedCount += 1
        for f, why in failed:
            if all(f is not g for g, _ in finishes):
                self._rename_failed(f, b"", why, now)

    def _rename_failed(self, f: HdfsFile, tail: bytes, why: str, now: float) -> None:
        self.counter.FileRenameFailCount += 1
        self._warn_rename.warn(
            "Sink %s: could not finish %s: %s; retrying every %gs.",
            self.name,
            f.tmp_path,
            why,
            self.config.retryInterval,
        )
        for r in self.retries:
            if r.file is f:
                r.tries += 1
                r.at = now + self.config.retryInterval
                tries = self.config.closeTries
                if tries and r.tries >= tries:
                    self.retries.remove(r)
                    log.error(
                        "Sink %s: gave up finishing %s after %d tries (hdfs.closeTries); the "
                        "next start finishes it.",
                        self.name,
                        f.tmp_path,
                        r.tries,
                    )
                return
        if self.config.closeTries == 1:
            log.error("Sink %s: gave up finishing %s (hdfs.closeTries = 1).", self.name, f.tmp_path)
            return
        self.retries.append(_Retry(f, tail, now + self.config.retryInterval))
        self._wake.set()

    # -- the roll timer ----------------------------------------------------------------------
    def _due(self, now: float) -> tuple[list[_Bucket], list[_Retry], float | None]:
        """Buckets whose file is due to roll, retries due, and the next deadline."""
        cfg = self.config
        due: list[_Bucket] = []
        nxt: float | None = None
        for b in self.buckets.values():
            f = b.file
            if f is None:
                continue
            deadlines = []
            if cfg.rollInterval:
                deadlines.append(f.opened + cfg.rollInterval)
            if cfg.idleTimeout:
                deadlines.append(f.last_write + cfg.idleTimeout)
            if not deadlines:
                continue
            d = min(deadlines)
            if d <= now:
                due.append(b)
            elif nxt is None or d < nxt:
                nxt = d
        retries = [r for r in self.retries if r.at <= now]
        for r in self.retries:
            if r.at > now and (nxt is None or r.at < nxt):
                nxt = r.at
        return due, retries, nxt

    async def _roll_timer(self) -> None:
        """Rolls files by rollInterval/idleTimeout and retries failed renames. Woken by
        `_wake` when a new file or retry may bring the next deadline closer."""
        while not self._stopping.is_set():
            try:
                nxt = await self._roll_due()
            except Exception as e:  # noqa: BLE001 - the timer must outlive one bad roll
                self._warn_timer.log(logging.ERROR, "Sink %s: roll timer: %s", self.name, e)
                self.report_problem(f"roll timer: {e}", "timer")
                nxt = time.monotonic() + 1.0
            else:
                self.clear_problem("timer")
            if nxt is not None and nxt <= time.monotonic():
                continue
            timeout = None if nxt is None else max(0.0, nxt - time.monotonic())
            wake = asyncio.ensure_future(self._wake.wait())
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({wake, stop}, timeout=timeout, return_when="FIRST_COMPLETED")
            finally:
                wake.cancel()
                stop.cancel()

    async def _roll_due(self) -> float | None:
        """Finish what is due; returns the next deadline (now: more may be due)."""
        async with self._lock:
            now = time.monotonic()
            due, retries, nxt = self._due(now)
            if due or retries:
                finishes = [self._detach(b) for b in due]
                for b in due:
                    # Forget the bucket (its next file gets a newer counter anyway), so
                    # buckets of past hours do not pile up.
                    self.buckets.pop(b.key, None)
                for r in retries:
                    self.retries.remove(r)
                failed = await self.store.finish(finishes + [(r.file, r.tail) for r in retries])
                bad = {id(f): why for f, why in failed}
                for f, _ in finishes:
                    if id(f) not in bad:
                        self.counter.ConnectionClosedCount += 1
                for r in retries:
                    if id(r.file) in bad:
                        self.retries.append(r)
                for f, why in failed:
                    self._rename_failed(f, b"", why, now)
                return now
            self._wake.clear()
            return nxt


def _leaf_regex(file_prefix: str) -> str:
    """A regex of the file names `hdfs.filePrefix` makes (its last path segment; each
    escape any text), so that recovery finishes this sink's files only."""
    leaf = file_prefix.rpartition("/")[2]
    out, pos = [], 0
    for m in escapes.TAG.finditer(leaf):
        out.append(re.escape(leaf[pos : m.start()]))
        out.append("%" if m.group(1) == "%" else ".*")
        pos = m.end()
    out.append(re.escape(leaf[pos:]))
    return "".join(out)


def _process_user() -> str:
    """WebHDFS `user.name` by default: the user this process runs as (as Hadoop's client)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "flume"


def _base_dir(t: escapes.Template) -> str:
    """The directory the template starts in: nothing an event says can leave it."""
    # With no escape at all, literal_prefix is the whole path: its directory part.
    head = t.literal_prefix.rpartition("/")[0]
    return posixpath.normpath(head or "/")
