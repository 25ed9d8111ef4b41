"""Where the hdfs sink's files live: a local (or mounted) filesystem, or HDFS over WebHDFS.

A store applies one batch at a time (`apply`): it appends each file's bytes (creating the
files new in this batch) and makes them durable (local: fsync; WebHDFS: the call was
acknowledged), then finishes (closes and renames) the files that rolled. When any write
fails it undoes what it wrote of this batch (local: truncate back, remove the files it
created; WebHDFS: TRUNCATE or DELETE, best effort) and raises StoreError, so the sink rolls
the take back. A failed rename does not fail the batch (its data is durable): it is
returned, and the sink retries it (`hdfs.closeTries`, `hdfs.retryInterval`).

Each store is used by one task at a time (the sink holds its lock around every call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import os
import re
import resource
import ssl
import stat
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from flumed.errors import ComponentStartError, DeliveryError
from flumed.sinks._hdfs_formats import FileFormat, GoodLength

log = logging.getLogger("flumed.sinks.hdfs")


class StoreError(DeliveryError):
    """A batch did not reach the store; what it wrote of the batch was undone.

    `abandon` lists files that could not be cut back to their last batch: the sink
    finishes them and continues in new files.
    """

    def __init__(
        self, message: str, *, retriable: bool = True, abandon: list[HdfsFile] | None = None
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.abandon = abandon or []


class HdfsFile:
    """One file of a bucket: where it is, its names, its format and what it holds.

    `size` is the length of the file as of the last committed batch (the good length);
    `events`/`body_bytes` count what it holds (for rollCount/rollSize). The loop owns
    every field except `fd`, `counter`, `exists` and `uncertain`, which the store sets
    while the sink's lock is held.
    """

    __slots__ = (
        "body_bytes",
        "counter",
        "dir",
        "events",
        "exists",
        "ext",
        "fd",
        "fmt",
        "last_write",
        "leaf",
        "names",
        "opened",
        "size",
        "uncertain",
    )

    def __init__(
        self,
        directory: str,
        leaf: str,
        counter: int,
        fmt: FileFormat,
        names: Callable[[str, int], tuple[str, str]],
        now: float,
    ) -> None:
        self.dir = directory
        self.leaf = leaf
        self.counter = counter
        self.fmt = fmt
        self.names = names  # (leaf, counter) -> (in-use name, final name)
        self.opened = now
        self.last_write = now
        self.events = 0
        self.body_bytes = 0
        self.size = 0
        self.fd: int | None = None
        self.exists = False
        self.uncertain = False

    @property
    def tmp_path(self) -> str:
        return _join(self.dir, self.names(self.leaf, self.counter)[0])

    @property
    def final_path(self) -> str:
        return _join(self.dir, self.names(self.leaf, self.counter)[1])

    def __repr__(self) -> str:
        return f"HdfsFile({self.tmp_path!r})"


def _join(d: str, name: str) -> str:
    return d.rstrip("/") + "/" + name


#: A batch's writes (file, bytes to append; a new file's bytes start with its header) and
#: finishes (file, bytes to append before it is closed and renamed).
Writes = list[tuple[HdfsFile, bytes]]
Finishes = list[tuple[HdfsFile, bytes]]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left or over quota ({e.strerror})"
    return e.strerror or str(e)


class LocalStore:
    """Files on a local or mounted filesystem, written in one I/O thread per sink (one
    job per batch, never per event), fsync'ed before the take commits when `fsync`."""

    def __init__(self, name: str, fsync: bool, max_fds: int = 5000) -> None:
        self.name = name
        self.fsync = fsync
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        # Descriptors kept open, least recently written first. Buckets may outnumber what
        # the process may open (hdfs.maxOpenFiles 5000 against a limit of 1024): the
        # least recently written files are closed and opened again when written.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        room = soft // 4 if soft != resource.RLIM_INFINITY else max_fds
        self.max_fds = max(16, min(max_fds, room))
        self._fds: OrderedDict[int, HdfsFile] = OrderedDict()

    async def start(self) -> None:
        # One thread: the writes, closes and renames of this sink stay in order.
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"hdfs-{self.name}")

    async def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._io is not None, "store not started"
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def apply(self, writes: Writes, finishes: Finishes) -> list[tuple[HdfsFile, str]]:
        """Write a batch, then finish files. Raises StoreError (batch undone); returns
        the finishes that failed, with why."""
        try:
            result: list[tuple[HdfsFile, str]] = await self._run(self._apply, writes, finishes)
        except OSError as e:
            bad = [f for f, _ in writes if f.uncertain]
            raise StoreError(
                f"cannot write {e.filename or 'a file'}: {_why(e)}", abandon=bad
            ) from e
        return result

    def _create(self, f: HdfsFile) -> None:
        os.makedirs(f.dir, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        for _ in range(10_000):
            if not os.path.lexists(f.final_path):
                try:
                    f.fd = os.open(f.tmp_path, flags, 0o644)
                except FileExistsError:
                    pass
                else:
                    f.exists = True
                    return
            f.counter += 1
        raise OSError(errno.EEXIST, "no free file name", f.dir)

    def _apply(self, writes: Writes, finishes: Finishes) -> list[tuple[HdfsFile, str]]:
        created: list[HdfsFile] = []
        written: list[HdfsFile] = []
        try:
            for f, data in writes:
                if not f.exists:
                    self._create(f)
                    created.append(f)
                elif f.fd is None:
                    f.fd = os.open(f.tmp_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                self._fds[id(f)] = f
                self._fds.move_to_end(id(f))
                written.append(f)
                try:
                    _write_all(f.fd, data)  # type: ignore[arg-type]
                except OSError as e:
                    e.filename = e.filename or f.tmp_path
                    raise
            if self.fsync:
                for f in written:
                    # Data and the file's new length; cheaper than fsync (no mtime).
                    os.fdatasync(f.fd)  # type: ignore[arg-type]
                for d in {f.dir for f in created}:
                    _fsync_dir(d)
        except OSError:
            self._undo(created, written)
            self._trim()
            raise
        failed: list[tuple[HdfsFile, str]] = []
        for f, tail in finishes:
            try:
                self._finish(f, tail)
            except OSError as e:
                failed.append((f, f"{e.filename or f.tmp_path}: {_why(e)}"))
        self._trim()
        return failed

    def _trim(self) -> None:
        while len(self._fds) > self.max_fds:
            _, f = self._fds.popitem(last=False)
            if f.fd is not None:
                try:
                    os.close(f.fd)
                finally:
                    f.fd = None

    def _undo(self, created: list[HdfsFile], written: list[HdfsFile]) -> None:
        for f in written:
            if f in created:
                continue
            try:
                os.ftruncate(f.fd, f.size)  # type: ignore[arg-type]
            except OSError as e:
                log.error(
                    "Sink %s: cannot cut %s back to its last batch (%s); it is closed and a "
                    "new file is used; it may end in a partial batch.",
                    self.name,
                    f.tmp_path,
                    e,
                )
                f.uncertain = True
        for f in created:
            self._fds.pop(id(f), None)
            if f.fd is not None:
                try:
                    os.close(f.fd)
                    os.unlink(f.tmp_path)
                except OSError:
                    pass
                f.fd = None
            f.exists = False

    def _finish(self, f: HdfsFile, tail: bytes) -> None:
        self._fds.pop(id(f), None)
        if tail and f.fd is None and f.exists:
            f.fd = os.open(f.tmp_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if f.fd is not None:
            if tail:
                _write_all(f.fd, tail)
                if self.fsync:
                    os.fsync(f.fd)
            os.close(f.fd)
            f.fd = None
        if not f.exists:
            return
        tmp, final = f.tmp_path, f.final_path
        if tmp != final:
            if os.path.lexists(final):
                raise OSError(errno.EEXIST, "the finished name exists already", final)
            os.rename(tmp, final)
            if self.fsync:
                _fsync_dir(f.dir)

    async def finish(self, finishes: Finishes) -> list[tuple[HdfsFile, str]]:
        """Close and rename files (roll timer, stop, retries); returns the failures."""
        return await self.apply([], finishes)

    async def recover(
        self,
        root: str,
        depth: int,
        match: Callable[[str], str | None],
        cut: GoodLength | None = None,
    ) -> int:
        """Rename in-use files a previous run left under `root` (down to `depth` levels):
        `match(name)` gives a file's finished name, or None for a file to leave alone.
        `cut` finds where the file's last whole batch ends: a batch the killed run was
        writing (never committed, so taken again) is cut off first. Returns how many
        files were finished."""
        return int(await self._run(self._recover, root, depth, match, cut))

    def _cut(self, path: str, size: int, cut: GoodLength) -> None:
        with open(path, "r+b") as fo:
            good = cut(fo, size)
            if good < size:
                fo.truncate(good)
                os.fsync(fo.fileno())
                log.warning(
                    "Sink %s: cut %d bytes of an unfinished batch off %s (it was not "
                    "committed and is delivered again).",
                    self.name,
                    size - good,
                    path,
                )

    def _recover(
        self,
        root: str,
        depth: int,
        match: Callable[[str], str | None],
        cut: GoodLength | None,
    ) -> int:
        n = 0
        stack = [(root, 0)]
        while stack:
            d, level = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for ent in entries:
                try:
                    st = ent.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if level < depth:
                        stack.append((ent.path, level + 1))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                final = match(ent.name)
                if final is None:
                    continue
                target = os.path.join(d, final)
                if cut is not None:
                    try:
                        self._cut(ent.path, st.st_size, cut)
                    except OSError as e:
                        log.warning("Sink %s: cannot check %s: %s", self.name, ent.path, e)
                        continue
                if os.path.lexists(target):
                    log.warning(
                        "Sink %s: left %s as it is: %s exists.", self.name, ent.path, target
                    )
                    continue
                try:
                    os.rename(ent.path, target)
                except OSError as e:
                    log.warning("Sink %s: cannot finish %s: %s", self.name, ent.path, e)
                    continue
                n += 1
                log.info("Sink %s finished %s of a previous run as %s.", self.name, ent.path, final)
        return n


# -- WebHDFS -------------------------------------------------------------------------------
class RemoteError(Exception):
    """A WebHDFS error answer: the RemoteException's name and message, and the status."""

    def __init__(self, op: str, path: str, status: int, exception: str, message: str) -> None:
        super().__init__(f"WebHDFS {op} {path}: {exception}: {message} (HTTP {status})")
        self.status = status
        self.exception = exception


#: RemoteExceptions that no retry will cure without an operator (still retried, slowly).
_FATAL = {"AccessControlException", "SecurityException", "AuthorizationException"}


class WebHdfsStore:
    """HDFS through the WebHDFS REST API (or HttpFS), on aiohttp.

    CREATE and APPEND go to the namenode, which answers 307 with a datanode's address, and
    the data goes there (two steps); with HttpFS (`httpfs`) the data goes to the same
    server with `data=true`. A file is created with its first batch (no empty files);
    every later batch is one APPEND, acknowledged once the datanodes hold it; a roll is a
    RENAME. `user.name` is the user; `doas` the proxy user (hdfs.proxyUser).

    A write whose answer never came (a timeout, a dropped connection) may have landed: the
    file is marked uncertain and, before it takes its next batch, its length is read back
    (GETFILESTATUS) and cut to the last committed batch (TRUNCATE), so a retried batch is
    not doubled. When the namenode cannot truncate at once (the last block needs
    recovery), the file is finished and a new one is used.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        user: str,
        proxy_user: str,
        httpfs: bool,
        timeout: float,
        cafile: str = "",
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.proxy_user = proxy_user
        self.httpfs = httpfs
        self.timeout = timeout
        self.cafile = cafile
        self._session: aiohttp.ClientSession | None = None
        self._dirs: set[str] = set()

    async def start(self) -> None:
        """Raises ComponentStartError when the CA file cannot be read."""
        tls: ssl.SSLContext | bool = True
        if self.cafile:
            try:
                tls = ssl.create_default_context(cafile=self.cafile)
            except (OSError, ssl.SSLError) as e:
                raise ComponentStartError(
                    f"sink {self.name}: key 'hdfs.webhdfs.cafile': {self.cafile}: {e}"
                ) from e
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(ssl=tls, limit=8),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the REST calls --------------------------------------------------------------------
    def _url(self, path: str, op: str, **params: str) -> tuple[str, dict[str, str]]:
        q = {"op": op, "user.name": self.user}
        if self.proxy_user:
            q["doas"] = self.proxy_user
        q.update(params)
        return f"{self.base_url}/webhdfs/v1{quote(path, safe='/')}", q

    async def _error(self, op: str, path: str, r: aiohttp.ClientResponse) -> RemoteError:
        body = await r.read()
        exception, message = f"HTTP{r.status}", body[:200].decode("utf-8", "replace").strip()
        try:
            rex = json.loads(body)["RemoteException"]
            exception = str(rex.get("exception") or rex.get("javaClassName") or exception)
            message = str(rex.get("message", ""))
        except (ValueError, KeyError, TypeError):
            pass
        return RemoteError(op, path, r.status, exception, message)

    async def _call(
        self, method: str, path: str, op: str, ok: tuple[int, ...] = (200,), **params: str
    ) -> Any:
        assert self._session is not None, "store not started"
        url, q = self._url(path, op, **params)
        async with self._session.request(method, url, params=q, allow_redirects=False) as r:
            if r.status not in ok:
                raise await self._error(op, path, r)
            if r.content_type == "application/json":
                return await r.json()
            await r.read()
            return None

    async def _send(self, method: str, path: str, op: str, data: bytes, ok: int, **p: str) -> None:
        """CREATE or APPEND: data to the datanode the namenode names (or to HttpFS)."""
        assert self._session is not None, "store not started"
        url, q = self._url(path, op, **p)
        headers = {"Content-Type": "application/octet-stream"}
        if self.httpfs:
            q["data"] = "true"
            async with self._session.request(
                method, url, params=q, data=data, headers=headers
            ) as r:
                if r.status != ok:
                    raise await self._error(op, path, r)
                await r.read()
            return
        async with self._session.request(method, url, params=q, allow_redirects=False) as r:
            if r.status != 307 or "Location" not in r.headers:
                raise await self._error(op, path, r)
            location = r.headers["Location"]
            await r.read()
        async with self._session.request(method, location, data=data, headers=headers) as r:
            if r.status != ok:
                raise await self._error(op, path, r)
            await r.read()

    async def _status(self, path: str) -> dict[str, Any] | None:
        try:
            j = await self._call("GET", path, "GETFILESTATUS")
        except RemoteError as e:
            if e.exception == "FileNotFoundException" or e.status == 404:
                return None
            raise
        return dict(j["FileStatus"])

    # -- the store contract ----------------------------------------------------------------
    async def apply(self, writes: Writes, finishes: Finishes) -> list[tuple[HdfsFile, str]]:
        """See LocalStore.apply."""
        created: list[HdfsFile] = []
        written: list[HdfsFile] = []
        current: HdfsFile | None = None
        try:
            for f, data in writes:
                current = f
                if f.uncertain:
                    await self._settle(f)
                if not f.exists:
                    await self._create(f, data)
                    created.append(f)
                else:
                    f.uncertain = True  # until acknowledged
                    await self._send("POST", f.tmp_path, "APPEND", data, 200)
                    f.uncertain = False
                    written.append(f)
        except _Abandon as e:
            await self._undo(created, written)
            raise StoreError(f"{e}; continuing in a new file", abandon=[e.file]) from e
        except (RemoteError, aiohttp.ClientError, TimeoutError, OSError) as e:
            if current is not None and current.uncertain and not current.exists:
                created.append(current)  # a CREATE without an answer: delete what landed
            await self._undo(created, written)
            fatal = isinstance(e, RemoteError) and e.exception in _FATAL
            where = current.tmp_path if current is not None else ""
            what = str(e) if isinstance(e, RemoteError) else f"{where}: {type(e).__name__}: {e}"
            raise StoreError(what, retriable=not fatal) from e
        return await self._finish_all(finishes)

    async def _mkdirs(self, d: str) -> None:
        if d not in self._dirs:
            await self._call("PUT", d, "MKDIRS")
            self._dirs.add(d)

    async def _create(self, f: HdfsFile, data: bytes) -> None:
        await self._mkdirs(f.dir)
        for _ in range(100):
            if f.uncertain:
                # A CREATE of ours whose answer was lost: the file is ours, and holds no
                # committed batch; start it again.
                await self._call("DELETE", f.tmp_path, "DELETE")
            elif await self._status(f.final_path) is not None:
                f.counter += 1
                continue
            f.uncertain = True
            try:
                await self._send("PUT", f.tmp_path, "CREATE", data, 201, overwrite="false")
            except RemoteError as e:
                if e.exception != "FileAlreadyExistsException":
                    raise
                f.uncertain = False  # someone else's file: take the next name
                f.counter += 1
                continue
            f.uncertain = False
            f.exists = True
            return
        raise RemoteError("CREATE", f.tmp_path, 0, "FileAlreadyExistsException", "no free name")

    async def _settle(self, f: HdfsFile) -> None:
        """Before a file with an unanswered write takes more: cut it to its good length."""
        if not f.exists:
            return  # _create deletes and starts again
        st = await self._status(f.tmp_path)
        if st is None:
            raise RemoteError("GETFILESTATUS", f.tmp_path, 404, "FileNotFoundException", "gone")
        length = int(st["length"])
        if length > f.size:
            j = await self._call("POST", f.tmp_path, "TRUNCATE", newlength=str(f.size))
            if not (j or {}).get("boolean", False):
                # Truncated once the last block is recovered; no appends until then.
                raise _Abandon(f)
            log.warning(
                "Sink %s: %s held %d bytes of a batch that was not acknowledged; cut back.",
                self.name,
                f.tmp_path,
                length - f.size,
            )
        f.uncertain = False

    async def _undo(self, created: list[HdfsFile], written: list[HdfsFile]) -> None:
        for f in created:
            try:
                await self._call("DELETE", f.tmp_path, "DELETE")
            except (RemoteError, aiohttp.ClientError, TimeoutError, OSError):
                f.uncertain = True
            else:
                f.uncertain = False
            f.exists = False
        for f in written:
            f.uncertain = True  # settled (cut back) before its next batch

    async def _finish_all(self, finishes: Finishes) -> list[tuple[HdfsFile, str]]:
        failed: list[tuple[HdfsFile, str]] = []
        for f, tail in finishes:
            try:
                if tail and f.exists:
                    await self._send("POST", f.tmp_path, "APPEND", tail, 200)
                if f.exists and f.tmp_path != f.final_path:
                    j = await self._call("PUT", f.tmp_path, "RENAME", destination=f.final_path)
                    if not (j or {}).get("boolean", False):
                        raise RemoteError("RENAME", f.tmp_path, 200, "RenameFailed", "false")
            except (RemoteError, aiohttp.ClientError, TimeoutError, OSError) as e:
                failed.append((f, str(e) or type(e).__name__))
        return failed

    async def finish(self, finishes: Finishes) -> list[tuple[HdfsFile, str]]:
        return await self._finish_all(finishes)

    async def recover(
        self,
        root: str,
        depth: int,
        match: Callable[[str], str | None],
        cut: GoodLength | None = None,
    ) -> int:
        """See LocalStore.recover (LISTSTATUS, RENAME). `cut` is not used: an APPEND that
        failed half-way was cut back (TRUNCATE) by the run that made it, or is in the
        file; HDFS keeps no partial write of a killed client past its lease recovery."""
        del cut
        n = 0
        stack = [(root, 0)]
        while stack:
            d, level = stack.pop()
            try:
                j = await self._call("GET", d, "LISTSTATUS")
            except RemoteError:
                continue
            for st in j["FileStatuses"]["FileStatus"]:
                name = st["pathSuffix"]
                if st["type"] == "DIRECTORY":
                    if level < depth:
                        stack.append((_join(d, name), level + 1))
                    continue
                final = match(name)
                if final is None:
                    continue
                try:
                    j2 = await self._call(
                        "PUT", _join(d, name), "RENAME", destination=_join(d, final)
                    )
                except RemoteError as e:
                    log.warning("Sink %s: cannot finish %s: %s", self.name, _join(d, name), e)
                    continue
                if (j2 or {}).get("boolean"):
                    n += 1
                    log.info("Sink %s finished %s of a previous run.", self.name, _join(d, name))
        return n


class _Abandon(Exception):  # control flow inside the store
    def __init__(self, f: HdfsFile) -> None:
        super().__init__(f"{f.tmp_path} is being recovered")
        self.file = f


def in_use_matcher(
    in_use_prefix: str, in_use_suffix: str, leaf: str, ext: str, before: int
) -> Callable[[str], str | None]:
    """For recovery: a leaf name → its finished name, when it is an in-use file of this
    sink's (its name made from `leaf`, a regex of the file prefix) of a run that started
    before counter `before` (this run's files are never touched)."""
    rx = re.compile(
        re.escape(in_use_prefix)
        + "("
        + leaf
        + r"\.(\d+)"
        + re.escape(ext)
        + ")"
        + re.escape(in_use_suffix)
    )

    def match(name: str) -> str | None:
        m = rx.fullmatch(name)
        if m is None or int(m.group(2)) >= before:
            return None
        return m.group(1)

    return match
