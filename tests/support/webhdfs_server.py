"""A WebHDFS test server (namenode + one "datanode" port), for the hdfs sink's tests.

Written from Apache Hadoop's WebHDFS REST API documentation, not from a cluster: the
namenode answers CREATE (PUT) and APPEND (POST) with `307 Temporary Redirect` to the
datanode port, where the data is sent; MKDIRS, RENAME, DELETE, TRUNCATE, GETFILESTATUS
and LISTSTATUS answer JSON; errors are `{"RemoteException": {"exception", "javaClassName",
"message"}}` with the documented status codes (400 IllegalArgument, 401 Security, 403
IOException and subclasses, 404 FileNotFound). `httpfs=True` behaves as HttpFS: data is
sent to the same server with `data=true`, no redirect.

Faults the tests switch on: `deny` (path prefixes where writes raise
AccessControlException), `leased` (paths whose APPEND raises AlreadyBeingCreatedException),
`quota` (DSQuotaExceededException on writes), `fail` (op → how many next calls fail with
an IOException), `stall_datanode` (datanode requests wait until released: a slow or hung
datanode), `lose_answer` (the datanode applies the write, then hangs: the write landed but
was never acknowledged), and stop/start of the whole server (namenode down).
"""

from __future__ import annotations

import asyncio
import posixpath
import ssl
from collections import Counter
from typing import Any

from aiohttp import web

from tests.util import free_port

_CLASSES = {
    "AccessControlException": "org.apache.hadoop.security.AccessControlException",
    "AlreadyBeingCreatedException": "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException",
    "FileAlreadyExistsException": "org.apache.hadoop.fs.FileAlreadyExistsException",
    "FileNotFoundException": "java.io.FileNotFoundException",
    "DSQuotaExceededException": "org.apache.hadoop.hdfs.protocol.DSQuotaExceededException",
    "IOException": "java.io.IOException",
    "IllegalArgumentException": "java.lang.IllegalArgumentException",
}
_STATUS = {"FileNotFoundException": 404, "IllegalArgumentException": 400}


def remote(exception: str, message: str) -> web.Response:
    return web.json_response(
        {
            "RemoteException": {
                "exception": exception,
                "javaClassName": _CLASSES.get(exception, "java.io.IOException"),
                "message": message,
            }
        },
        status=_STATUS.get(exception, 403),
    )


def boolean(v: bool) -> web.Response:
    return web.json_response({"boolean": v})


class WebHdfsServer:
    """Namenode and datanode on free ports of 127.0.0.1. `files` maps a path to its bytes."""

    def __init__(self, httpfs: bool = False, ssl_context: ssl.SSLContext | None = None) -> None:
        self.httpfs = httpfs
        self.ssl_context = ssl_context  # TLS on both ports (swebhdfs)
        self.port = free_port()
        self.dn_port = free_port()
        self.files: dict[str, bytearray] = {}
        self.dirs: set[str] = {"/"}
        self.requests: list[tuple[str, str, str, dict[str, str]]] = []  # (side, op, path, q)
        self.ops: Counter[str] = Counter()
        self.deny: set[str] = set()
        self.leased: set[str] = set()
        self.quota = False
        self.fail: Counter[str] = Counter()
        self.stall_datanode = False
        self.lose_answer = False
        self.release = asyncio.Event()
        self._runners: list[web.AppRunner] = []

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> WebHdfsServer:
        for port, handler in ((self.port, self._namenode), (self.dn_port, self._datanode)):
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/webhdfs/v1{path:.*}", handler)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=self.ssl_context).start()
            self._runners.append(runner)
        return self

    async def stop(self) -> None:
        """The whole cluster down (connections refused until start())."""
        self.release.set()
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()
        self.release = asyncio.Event()

    # -- helpers ---------------------------------------------------------------------------
    def _denied(self, path: str) -> bool:
        return any(path == d or path.startswith(d.rstrip("/") + "/") for d in self.deny)

    def _mkdirs(self, d: str) -> None:
        while d not in self.dirs:
            self.dirs.add(d)
            d = posixpath.dirname(d)

    def _check_write(self, op: str, path: str, q: dict[str, str]) -> web.Response | None:
        if self.fail[op] > 0:
            self.fail[op] -= 1
            return remote("IOException", f"injected failure of {op}")
        if self._denied(path):
            user = q.get("doas") or q.get("user.name", "dr.who")
            return remote(
                "AccessControlException",
                f'Permission denied: user={user}, access=WRITE, inode="{path}"',
            )
        if self.quota and op in ("CREATE", "APPEND"):
            return remote(
                "DSQuotaExceededException",
                "The DiskSpace quota of /flume is exceeded: quota = 1024 B",
            )
        if op == "APPEND" and path in self.leased:
            return remote(
                "AlreadyBeingCreatedException",
                f"Failed to APPEND_FILE {path}: lease is held by DFSClient_other",
            )
        return None

    # -- namenode --------------------------------------------------------------------------
    async def _namenode(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"] or "/"
        q = dict(request.query)
        op = q.get("op", "").upper()
        self.requests.append(("nn", op, path, q))
        self.ops[op] += 1
        if "user.name" not in q:
            return remote("SecurityException", "no user.name")
        if op in ("CREATE", "APPEND"):
            bad = self._check_write(op, path, q)
            if bad is not None:
                return bad
            if op == "APPEND" and path not in self.files:
                return remote("FileNotFoundException", f"File does not exist: {path}")
            if self.httpfs:
                if q.get("data") != "true":
                    return remote("IllegalArgumentException", "HttpFS needs data=true")
                return await self._write(op, path, q, request)
            scheme = "https" if self.ssl_context else "http"
            loc = f"{scheme}://127.0.0.1:{self.dn_port}/webhdfs/v1{path}?" + "&".join(
                f"{k}={v}" for k, v in {**q, "namenoderpcaddress": "nn:8020"}.items()
            )
            return web.Response(status=307, headers={"Location": loc})
        if op == "MKDIRS":
            bad = self._check_write(op, path, q)
            if bad is not None:
                return bad
            self._mkdirs(path)
            return boolean(True)
        if op == "RENAME":
            bad = self._check_write(op, path, q)
            if bad is not None:
                return bad
            dest = q["destination"]
            if path not in self.files or dest in self.files:
                return boolean(False)
            self.files[dest] = self.files.pop(path)
            return boolean(True)
        if op == "DELETE":
            return boolean(self.files.pop(path, None) is not None)
        if op == "TRUNCATE":
            if path not in self.files:
                return remote("FileNotFoundException", f"File does not exist: {path}")
            n = int(q["newlength"])
            del self.files[path][n:]
            return boolean(True)
        if op == "GETFILESTATUS":
            if path in self.files:
                return web.json_response(
                    {"FileStatus": {"type": "FILE", "length": len(self.files[path])}}
                )
            if path in self.dirs:
                return web.json_response({"FileStatus": {"type": "DIRECTORY", "length": 0}})
            return remote("FileNotFoundException", f"File does not exist: {path}")
        if op == "LISTSTATUS":
            if path not in self.dirs:
                return remote("FileNotFoundException", f"File {path} does not exist.")
            prefix = path.rstrip("/") + "/"
            out = []
            for p, data in self.files.items():
                if p.startswith(prefix) and "/" not in p[len(prefix) :]:
                    out.append(
                        {"pathSuffix": p[len(prefix) :], "type": "FILE", "length": len(data)}
                    )
            for d in self.dirs:
                if d.startswith(prefix) and d != path and "/" not in d[len(prefix) :]:
                    out.append({"pathSuffix": d[len(prefix) :], "type": "DIRECTORY", "length": 0})
            return web.json_response({"FileStatuses": {"FileStatus": out}})
        return remote("IllegalArgumentException", f"Invalid value for webhdfs parameter op: {op}")

    # -- datanode --------------------------------------------------------------------------
    async def _datanode(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        q = dict(request.query)
        op = q.get("op", "").upper()
        self.requests.append(("dn", op, path, q))
        if self.stall_datanode:
            await self.release.wait()
            raise web.HTTPServiceUnavailable()
        return await self._write(op, path, q, request)

    async def _write(
        self, op: str, path: str, q: dict[str, str], request: web.Request
    ) -> web.StreamResponse:
        data = await request.read()
        if op == "CREATE":
            if path in self.files and q.get("overwrite", "false") != "true":
                return remote("FileAlreadyExistsException", f"{path} for client already exists")
            self._mkdirs(posixpath.dirname(path))
            self.files[path] = bytearray(data)
            status = 201
        elif op == "APPEND":
            if path not in self.files:
                return remote("FileNotFoundException", f"File does not exist: {path}")
            self.files[path] += data
            status = 200
        else:
            return remote("IllegalArgumentException", f"op {op} at the datanode")
        if self.lose_answer:
            await self.release.wait()  # the data landed; the answer never comes
            raise web.HTTPServiceUnavailable()
        resp: dict[str, Any] = {}
        if status == 201:
            return web.Response(status=201, headers={"Location": f"hdfs://nn:8020{path}"})
        return web.json_response(resp, status=200) if resp else web.Response(status=200)
