"""Test servers for the HTTP-speaking sinks, on aiohttp, on free ports.

- `Recorder`: any POST/PUT, answered as a `policy(n, request, body)` decides.
- `BulkServer`: an Elasticsearch/OpenSearch `_bulk` double following the public `_bulk`
  documentation: NDJSON action/source pairs in, `{"took", "errors", "items"}` out, with
  per-item statuses chosen by a policy (201, 400 mapping errors, 429, 503), whole-request
  503s, slow answers and connection resets; it keeps the indexed documents by `_id`.
- `HBaseRestServer`: an HBase REST gateway double following the HBase reference guide's
  REST section: `PUT /<table>/<row>` with a CellSet (JSON or XML, base64 keys, columns
  and values) and `POST /<table>/<row>?check=increment`; it keeps the cells.

None of them is a real Elasticsearch or HBase: they implement the documented wire
behaviour the sinks rely on, including the failures.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.util import free_port

#: What a policy answers: a status, "reset" (drop the connection), "hang" (answer only when
#: `gate` is set or the client goes away) or (status, body bytes).
Answer = int | str | tuple[int, bytes]


class _Base:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        #: Requests failed as a whole by a policy (each may cause one batch to be resent).
        self.failed_requests = 0
        self.gate = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.ssl_context: Any = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self, ssl_context: Any = None) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context)
        if ssl_context is not None:
            self.url = f"https://localhost:{self.port}"
        await site.start()

    async def close(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Any:
        await self.start(self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    async def body_of(request: web.Request) -> bytes:
        # aiohttp's server already undid a `Content-Encoding: gzip` (a body that is not
        # gzip fails there with a 400).
        return await request.read()

    async def special(self, request: web.Request, answer: Answer) -> web.StreamResponse | None:
        """Handle "reset" and "hang"; None for an ordinary answer."""
        if answer in ("reset", "hang"):
            self.failed_requests += 1
        if answer == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if answer == "hang":
            await self.gate.wait()
            return web.Response(status=503)
        return None


class Recorder(_Base):
    """Records every request (headers, body) and answers per `policy`."""

    def __init__(
        self, policy: Callable[[int, web.Request, bytes], Answer] | None = None, keep: bool = True
    ) -> None:
        super().__init__()
        self.policy = policy or (lambda n, r, b: 200)
        self.keep = keep
        self.bytes = 0
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[bytes] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.body_of(request)
        n = self.requests
        self.requests += 1
        self.bytes += len(body)
        if not self.keep:
            return web.Response(status=200)
        self.received.append((dict(request.headers), body))
        answer = self.policy(n, request, body)
        special = await self.special(request, answer)
        if special is not None:
            return special
        status, text = answer if isinstance(answer, tuple) else (int(answer), b"")
        if 200 <= status < 300:
            self.accepted.append(body)
        else:
            self.failed_requests += 1
        return web.Response(status=status, body=text)


# -- Elasticsearch _bulk ---------------------------------------------------------------


def bulk_error(status: int) -> dict[str, Any]:
    """The error object Elasticsearch puts in a failed bulk item (shape of the docs)."""
    if status == 429:
        return {
            "type": "es_rejected_execution_exception",
            "reason": "rejected execution of coordinating operation",
        }
    if status >= 500:
        return {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}
    return {
        "type": "mapper_parsing_exception",
        "reason": "failed to parse field [n] of type [long]",
    }


class BulkServer(_Base):
    """`_bulk` double. `item_policy(doc) -> status` picks each item's status;
    `request_policy(n) -> Answer | None` can fail a whole request first.

    `GET /` answers the cluster info with `version.number` = `version`.
    Indexed documents are kept in `docs` (by `_index`/`_id`; an action without `_id`
    gets a generated one) and `indexed` counts every successful item (duplicates too).
    """

    def __init__(
        self,
        item_policy: Callable[[dict[str, Any], dict[str, Any]], int] | None = None,
        request_policy: Callable[[int], Answer | None] | None = None,
        version: str = "8.13.0",
        keep: bool = True,
        max_content_length: int = 100 * 1024 * 1024,
    ) -> None:
        super().__init__()
        self.max_content_length = max_content_length
        self.item_policy = item_policy
        self.request_policy = request_policy
        self.version = version
        self.keep = keep
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.actions: list[dict[str, Any]] = []
        self.indexed = 0
        self.item_statuses: Counter[int] = Counter()
        self.headers: list[dict[str, str]] = []
        self._next_id = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.info)
        app.router.add_post("/_bulk", self.bulk)

    async def info(self, request: web.Request) -> web.Response:
        dist = {"distribution": "opensearch"} if self.version.startswith(("1.", "2.")) else {}
        return web.json_response(
            {"name": "double", "version": {"number": self.version, **dist}, "tagline": "test"}
        )

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        n = self.requests
        self.requests += 1
        self.headers.append(dict(request.headers))
        body = await self.body_of(request)
        if len(body) > self.max_content_length:
            return web.Response(status=413, text="Request Entity Too Large")
        if self.request_policy is not None:
            answer = self.request_policy(n)
            if answer is not None:
                special = await self.special(request, answer)
                if special is not None:
                    return special
                status = answer if isinstance(answer, int) else answer[0]  # type: ignore[index]
                self.failed_requests += 1
                return web.json_response(
                    {"error": bulk_error(int(status)), "status": status}, status=int(status)
                )
        lines = body.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        else:
            return web.json_response(
                {"error": {"type": "illegal_argument_exception",
                           "reason": "The bulk request must be terminated by a newline [\\n]"},
                 "status": 400},
                status=400,
            )  # fmt: skip
        if not self.keep and self.item_policy is None:
            # The benchmark's fast path: every item created, nothing parsed.
            count = len(lines) // 2
            self.indexed += count
            item = b'{"index":{"_index":"x","_id":"1","status":201,"result":"created"}}'
            out = b'{"took":1,"errors":false,"items":[' + b",".join([item] * count) + b"]}"
            return web.Response(body=out, content_type="application/json")
        items = []
        errors = False
        for i in range(0, len(lines), 2):
            action = json.loads(lines[i])
            op, meta = next(iter(action.items()))
            doc = json.loads(lines[i + 1])
            self.actions.append(action)
            status = self.item_policy(meta, doc) if self.item_policy else 201
            index = meta.get("_index", "")
            if 200 <= status < 300:
                doc_id = meta.get("_id")
                if doc_id is None:
                    doc_id = f"gen{self._next_id}"
                    self._next_id += 1
                if self.keep:
                    self.docs[(index, doc_id)] = doc
                self.indexed += 1
                item = {"_index": index, "_id": doc_id, "status": status, "result": "created"}
            else:
                errors = True
                item = {"_index": index, "_id": meta.get("_id"), "status": status,
                        "error": bulk_error(status)}  # fmt: skip
            self.item_statuses[status] += 1
            items.append({op: item})
        return web.json_response({"took": 3, "errors": errors, "items": items})


# -- HBase REST ------------------------------------------------------------------------


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


class HBaseRestServer(_Base):
    """HBase REST gateway double: `cells[table][row][b"cf:col"] = value` (bytes).

    `policy(n, rows) -> Answer | None` may fail a whole put (rows: the row keys of the
    request); `bad_row(row) -> bool` makes any put holding that row a 400 (a bad column
    family, say), as HBase answers a failing multi-row put as a whole.
    `families` are the column families each table has; a put to another family is a 404
    (HBase's NoSuchColumnFamilyException travels as "Not found").
    """

    def __init__(
        self,
        families: dict[str, set[str]] | None = None,
        policy: Callable[[int, list[bytes]], Answer | None] | None = None,
        bad_row: Callable[[bytes], bool] | None = None,
    ) -> None:
        super().__init__()
        self.families = families if families is not None else {"t1": {"cf"}}
        self.policy = policy
        self.bad_row = bad_row
        self.cells: dict[str, dict[bytes, dict[bytes, bytes]]] = defaultdict(dict)
        self.increments: Counter[tuple[bytes, bytes]] = Counter()
        self.increment_requests = 0
        self.put_rows = 0
        self.content_types: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{table}/schema", self.schema)
        app.router.add_put("/{table}/{row:.*}", self.put)
        app.router.add_post("/{table}/{row:.*}", self.put)
        app.router.add_get("/version/cluster", self.version)

    async def schema(self, request: web.Request) -> web.Response:
        table = request.match_info["table"]
        if table not in self.families:
            return web.Response(status=404, text="Not found\r\n")
        cols = [{"name": f, "VERSIONS": "1"} for f in sorted(self.families[table])]
        return web.json_response({"name": table, "ColumnSchema": cols, "IS_META": "false"})

    async def version(self, request: web.Request) -> web.Response:
        return web.Response(text="2.5.8", content_type="text/plain")

    @staticmethod
    def parse_cellset(
        body: bytes, content_type: str
    ) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
        rows = []
        if "xml" in content_type:
            root = ET.fromstring(body)
            for row in root.findall("Row"):
                cells = [
                    (unb64(c.get("column", "")), unb64(c.text or "")) for c in row.findall("Cell")
                ]
                rows.append((unb64(row.get("key", "")), cells))
            return rows
        doc = json.loads(body)
        for row in doc["Row"]:
            cells = [(unb64(c["column"]), unb64(c["$"])) for c in row["Cell"]]
            rows.append((unb64(row["key"]), cells))
        return rows

    async def put(self, request: web.Request) -> web.StreamResponse:
        n = self.requests
        self.requests += 1
        table = request.match_info["table"]
        body = await self.body_of(request)
        ctype = request.headers.get("Content-Type", "")
        self.content_types.append(ctype)
        try:
            rows = self.parse_cellset(body, ctype)
        except (ValueError, KeyError, ET.ParseError) as e:
            return web.Response(status=400, text=f"Bad request: {e}\r\n")
        if self.policy is not None:
            answer = self.policy(n, [r for r, _ in rows])
            if answer is not None:
                special = await self.special(request, answer)
                if special is not None:
                    return special
                status = answer if isinstance(answer, int) else answer[0]  # type: ignore[index]
                self.failed_requests += 1
                return web.Response(status=int(status), text="Service Unavailable\r\n")
        if table not in self.families:
            return web.Response(status=404, text="Not found\r\n")
        fams = self.families[table]
        for row, cells in rows:
            if self.bad_row is not None and self.bad_row(row):
                return web.Response(status=400, text="Bad request\r\n")
            for col, _ in cells:
                if b":" not in col or col.split(b":", 1)[0].decode() not in fams:
                    return web.Response(status=404, text="Not found\r\n")
        if request.query.get("check") == "increment":
            if len(rows) != 1:
                return web.Response(
                    status=400, text="Bad request: Number of rows specified is not 1.\r\n"
                )
            row, cells = rows[0]
            self.increment_requests += 1
            for col, value in cells:
                self.increments[(row, col)] += int(value.decode())
            return web.Response(status=200)
        for row, cells in rows:
            self.put_rows += 1
            target = self.cells[table].setdefault(row, {})
            for col, value in cells:
                target[col] = value
        return web.Response(status=200)


def random_policy(seed: int, p: float, answers: list[Answer]) -> Callable[..., Answer | None]:
    """A policy failing a fraction `p` of calls with one of `answers`, seeded."""
    rnd = random.Random(seed)

    def policy(*_: Any) -> Answer | None:
        if rnd.random() < p:
            return rnd.choice(answers)
        return None

    return policy


def serve_main() -> None:
    """`python -m tests.support.http_servers KIND PORT`: a fast double in its own process
    for benchmarks (KIND: recorder or bulk; nothing kept, every item a success)."""
    import sys

    import uvloop

    kind, port = sys.argv[1], int(sys.argv[2])

    async def run() -> None:
        srv: _Base = Recorder(keep=False) if kind == "recorder" else BulkServer(keep=False)
        srv.port = port
        await srv.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(run())


if __name__ == "__main__":
    serve_main()
