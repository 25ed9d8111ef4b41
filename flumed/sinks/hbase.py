"""Sinks `hbase`, `hbase2` and `asynchbase` (Flume `org.apache.flume.sink.hbase.HBaseSink`,
`org.apache.flume.sink.hbase2.HBase2Sink`, `org.apache.flume.sink.hbase.AsyncHBaseSink`):
rows and counters into an HBase table, written through the HBase REST gateway, because no
Python client speaks HBase's native RPC.

Keys: `rest.url` (the gateway, e.g. `http://rest1:8080`; a comma list is tried in turn),
`rest.format` (`json` or `xml` CellSets), `table`, `columnFamily`, `batchSize` (100),
`coalesceIncrements` (false), `timeout` (ms, Flume's; 60000), `retries` (5), and
`serializer` with `serializer.*`:

- Flume's `SimpleHbaseEventSerializer` / `SimpleHBase2EventSerializer` /
  `SimpleAsyncHbaseEventSerializer` (the default): the body into `payloadColumn` (pCol)
  of row `rowPrefix` (default) + `suffix` (uuid | random | timestamp | nano), and +1 on
  `incrementRow` (incRow) / `incrementColumn` (iCol); an empty column turns either off.
- Flume's `RegexHbaseEventSerializer` / `RegexHBase2EventSerializer`: `regex` ((.*)) must
  match the whole body (decoded with `charset`, UTF-8); its groups go to `colNames`
  (payload; comma list), the group at `rowKeyIndex` (one named ROW_KEY) is the row key,
  else the key is `<ms>-<10 random letters>-<nonce>` as Flume's; `depositHeaders` adds
  each header as a column; `regexIgnoreCase`.

`zookeeperQuorum` and `znodeParent` are accepted with a warning that `rest.url` is what
is used; `enableWal`, Kerberos keys, `maxConsecutiveFails`, `batchIncrements` and
`async.*` are accepted and ignored (warned).

Per take: one multi-row `PUT /<table>/fakerow` with every row, then the increments
(`POST /<table>/fakerow?check=increment`, one per row when coalesced, one per increment as
Flume when not). A 429/5xx answer or a timeout is retried within the take (the same
row keys: the puts are idempotent) up to `retries` times, then the take rolls back. A
put refused with 400/404/413 is split in halves until the refused rows are found; those,
and events the serializer cannot use (no regex match, a missing group), go to the
dead-letter file, counted. Before the first take the sink checks that the table and the
column family exist (`GET /<table>/schema`), so a missing table backs off instead of
setting every row aside.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import itertools
import json
import logging
import random
import re
import string
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from flumed.config.keys import ignored, key, prefix
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.lifecycle import Backoff
from flumed.sinks.httpclient import (
    DeadLetterFile,
    DeadLetterSinkCounter,
    HttpClient,
    HttpClientKeys,
    HttpClientSink,
    Response,
    event_record,
)

log = logging.getLogger("flumed.sinks.hbase")

SIMPLE = (
    "simplehbaseeventserializer",
    "simplehbase2eventserializer",
    "simpleasynchbaseeventserializer",
    "simple",
)
REGEX = ("regexhbaseeventserializer", "regexhbase2eventserializer", "regex")
SIMPLE_KEYS = {"payloadColumn", "incrementColumn", "rowPrefix", "incrementRow", "suffix"}
REGEX_KEYS = {"regex", "colNames", "rowKeyIndex", "regexIgnoreCase", "depositHeaders", "charset"}


def _kind(serializer: str) -> str:
    short = serializer.strip().rsplit(".", 1)[-1].lower()
    if short in SIMPLE or not short:
        return "simple"
    if short in REGEX:
        return "regex"
    return ""


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HBaseSinkConfig(HttpClientKeys):
    IGNORED = {
        **ignored(
            "enableWal",
            "kerberosKeytab",
            "kerberosPrincipal",
            "maxConsecutiveFails",
            "batchIncrements",
        ),
        "zookeeperQuorum": "is not used: flumed writes through the HBase REST gateway "
        "named by 'rest.url'",
        "znodeParent": "is not used: flumed writes through the HBase REST gateway "
        "named by 'rest.url'",
    }

    rest_url: str = key(name="rest.url", doc="HBase REST gateway URL(s), comma list.")
    rest_format: Literal["json", "xml"] = key(
        "json", name="rest.format", doc="CellSet encoding of requests."
    )
    table: str = key(doc="Table (namespace:table allowed).")
    columnFamily: str = key(doc="Column family of every cell.")
    batchSize: int = key(100, ge=1, doc="Events per take, one multi-row put.")
    coalesceIncrements: bool = key(
        False, doc="Sum a take's increments per row and column (one request per row)."
    )
    requestTimeout: int = key(
        60_000, ge=1, aliases=("timeout",), doc="Milliseconds per request (Flume: timeout)."
    )
    retries: int = key(5, ge=0, doc="Times a 429/5xx/timed-out request is resent in one take.")
    # `serializer` (the class) and `serializer.*` in one table: the class under "".
    serializerTable: dict[str, str] = prefix(
        "serializer", doc="Simple…EventSerializer (default) or Regex…EventSerializer, and keys."
    )
    async_keys: dict[str, str] = prefix("async", doc="asynchbase's `async.*`: ignored.")

    @property
    def serializer(self) -> str:
        return str(self.serializerTable.get("", ""))

    @property
    def serializer_keys(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.serializerTable.items() if k}

    def urls(self) -> list[str]:
        return [u.strip() for u in self.rest_url.split(",") if u.strip()]

    def check(self) -> list[str]:
        problems = self.http_problems()
        if not self.urls() or not all(re.match(r"^https?://", u) for u in self.urls()):
            problems.append(
                f"key 'rest.url': needs http:// or https:// URL(s) of the HBase REST "
                f"gateway, got {self.rest_url!r}"
            )
        kind = _kind(self.serializer)
        if not kind:
            problems.append(
                f"key 'serializer': {self.serializer!r} is not available; use Flume's "
                "SimpleHbaseEventSerializer or RegexHbaseEventSerializer"
            )
            return problems
        allowed = SIMPLE_KEYS if kind == "simple" else REGEX_KEYS
        for k in sorted(set(self.serializer_keys) - allowed):
            problems.append(
                f"unknown key 'serializer.{k}' for the {kind} serializer "
                f"(known: {', '.join(sorted(allowed))})"
            )
        try:
            make_serializer(self)
        except ValueError as e:
            problems.append(str(e))
        return problems


# -- serializers ------------------------------------------------------------------------

#: One row to put: (row key, [(qualifier, value)]).
Put = tuple[bytes, list[tuple[bytes, bytes]]]
#: One increment: (row key, qualifier, amount).
Increment = tuple[bytes, bytes, int]


class SerializerError(ValueError):
    """This event gives no row (the dead-letter file takes it)."""


class SimpleSerializer:
    """Flume's SimpleHbaseEventSerializer: the body in one column of a generated row
    key, and +1 on a counter cell per event."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.prefix = keys.get("rowPrefix", "default")
        self.inc_row = keys.get("incrementRow", "incRow").encode()
        payload = keys.get("payloadColumn", "pCol")
        inc = keys.get("incrementColumn", "iCol")
        suffix = keys.get("suffix", "uuid")
        if suffix not in ("uuid", "random", "timestamp", "nano"):
            raise ValueError(
                f"key 'serializer.suffix': expected uuid, random, timestamp or nano, got {suffix!r}"
            )
        self.suffix = suffix
        self.payload_col = payload.encode() if payload else None
        self.inc_col = inc.encode() if inc else None

    def row_key(self) -> bytes:
        s = self.suffix
        if s == "timestamp":
            tail = str(int(time.time() * 1000))
        elif s == "random":
            tail = str(random.getrandbits(64) - (1 << 63))  # Java's Random.nextLong()
        elif s == "nano":
            tail = str(time.monotonic_ns())  # System.nanoTime(): a monotonic count
        else:
            tail = str(uuid.uuid4())
        return (self.prefix + tail).encode()

    def __call__(self, e: Event) -> tuple[list[Put], list[Increment]]:
        puts = [(self.row_key(), [(self.payload_col, e.body)])] if self.payload_col else []
        incs = [(self.inc_row, self.inc_col, 1)] if self.inc_col else []
        return puts, incs


# Flume's RegexHbaseEventSerializer keeps one random key and one nonce per JVM.
_RANDOM_KEY = "".join(random.choices(string.ascii_letters + string.digits, k=10))
_NONCE = itertools.count()


class RegexSerializer:
    """Flume's RegexHbaseEventSerializer: regex groups into columns of one row."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.charset = keys.get("charset", "UTF-8")
        try:
            codecs.lookup(self.charset)
        except LookupError:
            raise ValueError(
                f"key 'serializer.charset': unknown charset {self.charset!r}"
            ) from None
        ignore_case = _bool(keys.get("regexIgnoreCase", "false"), "regexIgnoreCase")
        self.deposit = _bool(keys.get("depositHeaders", "false"), "depositHeaders")
        pattern = keys.get("regex", "(.*)")
        try:
            self.regex = re.compile(pattern, re.DOTALL | (re.IGNORECASE if ignore_case else 0))
        except re.error as err:
            raise ValueError(f"key 'serializer.regex': {err}") from None
        names = keys.get("colNames", "payload").split(",")
        self.cols = [n.encode(self.charset) for n in names]
        try:
            self.row_index = int(keys.get("rowKeyIndex", "-1"))
        except ValueError:
            raise ValueError("key 'serializer.rowKeyIndex': expected an integer") from None
        if self.row_index >= 0:
            if self.row_index >= len(names):
                raise ValueError(
                    f"key 'serializer.rowKeyIndex' must be less than the number of colNames "
                    f"({len(names)})"
                )
            if names[self.row_index].upper() != "ROW_KEY":
                raise ValueError(
                    f"key 'serializer.colNames': the column at rowKeyIndex {self.row_index} "
                    f"must be ROW_KEY, not {names[self.row_index]!r}"
                )

    def __call__(self, e: Event) -> tuple[list[Put], list[Increment]]:
        m = self.regex.fullmatch(e.body.decode(self.charset, "replace"))
        if m is None:
            raise SerializerError(f"serializer.regex {self.regex.pattern!r} does not match")
        groups = m.groups()
        if len(groups) != len(self.cols):
            raise SerializerError(
                f"serializer.regex has {len(groups)} groups for {len(self.cols)} colNames"
            )
        if any(g is None for g in groups):
            raise SerializerError("a group of serializer.regex did not take part in the match")
        if self.row_index < 0:
            ms = int(time.time() * 1000)
            row = f"{ms}-{_RANDOM_KEY}-{next(_NONCE)}".encode(self.charset)
        else:
            row = groups[self.row_index].encode()
        skip = self.row_index
        cells = [(c, g.encode()) for i, (c, g) in enumerate(zip(self.cols, groups, strict=True))
                 if i != skip]  # fmt: skip
        if self.deposit:
            cs = self.charset
            cells += [(k.encode(cs), v.encode(cs)) for k, v in e.headers.items()]
        return [(row, cells)], []


def _bool(v: str, name: str) -> bool:
    if v.strip().lower() not in ("true", "false"):
        raise ValueError(f"key 'serializer.{name}': expected true or false, got {v!r}")
    return v.strip().lower() == "true"


def make_serializer(cfg: HBaseSinkConfig) -> SimpleSerializer | RegexSerializer:
    """Raises ValueError naming the serializer key that is wrong."""
    if _kind(cfg.serializer) == "regex":
        return RegexSerializer(cfg.serializer_keys)
    return SimpleSerializer(cfg.serializer_keys)


# -- CellSet encoding -------------------------------------------------------------------


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def cellset_json(rows: list[Put], family: bytes) -> bytes:
    """The REST gateway's JSON CellSet: base64 row keys, `family:qualifier` columns and
    values (`$`)."""
    f = family + b":"
    out = []
    for row, cells in rows:
        cs = ",".join(f'{{"column":"{_b64(f + q)}","$":"{_b64(v)}"}}' for q, v in cells)
        out.append(f'{{"key":"{_b64(row)}","Cell":[{cs}]}}')
    return ('{"Row":[' + ",".join(out) + "]}").encode()


def cellset_xml(rows: list[Put], family: bytes) -> bytes:
    """The REST gateway's XML CellSet (same content as `cellset_json`)."""
    f = family + b":"
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?><CellSet>']
    for row, cells in rows:
        out.append(f"<Row key={quoteattr(_b64(row))}>")
        out += [f"<Cell column={quoteattr(_b64(f + q))}>{_b64(v)}</Cell>" for q, v in cells]
        out.append("</Row>")
    out.append("</CellSet>")
    return "".join(out).encode()


# -- the sink ---------------------------------------------------------------------------

_REFUSED = (400, 404, 413)
_FATAL = (401, 403, 405, 407)


class _Rows:
    """The rows of a take: each put with the event it came from."""

    __slots__ = ("events", "puts")

    def __init__(self) -> None:
        self.puts: list[Put] = []
        self.events: list[Event] = []


class HBaseSink(HttpClientSink):
    """Puts takes through the HBase REST gateway; see the module docstring."""

    Config = HBaseSinkConfig
    config: HBaseSinkConfig
    counter: DeadLetterSinkCounter
    counter_class = DeadLetterSinkCounter
    flume_name = "hbase"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        cfg = self.config
        who = f"{self.flume_name} sink {name}"
        self.who = who
        self._client = HttpClient(who, cfg.urls(), cfg)
        self._dead = DeadLetterFile(who, cfg.dead_letter_path, self.counter)
        self._serialize = make_serializer(cfg)
        self._family = cfg.columnFamily.encode()
        self._table_path = "/" + quote(cfg.table, safe=":")
        if cfg.rest_format == "xml":
            self._encode, ctype = cellset_xml, "text/xml"
        else:
            self._encode, ctype = cellset_json, "application/json"
        self._headers = {"Content-Type": ctype, "Accept": ctype}
        self._checked = False
        self.retry_backoff = Backoff(0.2, 5.0)
        if cfg.async_keys:
            log.warning("%s: keys async.* are ignored (asynchbase client settings).", who)

    async def prepare(self) -> None:
        """Before the first take: the table and its column family must exist.

        Raises:
            DeliveryError: the gateway is down, or the table or family is missing.
        """
        if self._checked:
            return
        resp = await self._client.request(
            "GET", self._table_path + "/schema", headers={"Accept": "application/json"}
        )
        cfg = self.config
        if resp.status == 404:
            raise DeliveryError(f"{self.who}: table {cfg.table!r} does not exist", retriable=False)
        if resp.status == 200:
            try:
                families = {c["name"] for c in json.loads(resp.body).get("ColumnSchema", [])}
            except (ValueError, KeyError, TypeError, AttributeError):
                families = set()
            if families and cfg.columnFamily not in families:
                raise DeliveryError(
                    f"{self.who}: table {cfg.table!r} has no column family "
                    f"{cfg.columnFamily!r} (it has {', '.join(sorted(families))})",
                    retriable=False,
                )
        else:
            log.info("%s: GET schema answered %d; not checking the table.", self.who, resp.status)
        self._checked = True

    async def deliver(self, events: list[Event]) -> None:
        """Put the take's rows, then its increments; return once each row is stored or
        set aside.

        Raises:
            DeliveryError: the gateway failed past `retries`, or refused as a whole
                (auth).
        """
        rows = _Rows()
        incs: list[Increment] = []
        set_aside: list[dict[str, Any]] = []
        serialize = self._serialize
        for e in events:
            try:
                puts, more = serialize(e)
            except SerializerError as err:
                set_aside.append({"status": 0, "error": str(err), **event_record(e)})
                continue
            for p in puts:
                rows.puts.append(p)
                rows.events.append(e)
            incs += more
        if rows.puts:
            await self._put(rows.puts, rows.events, set_aside)
        if incs:
            await self._increments(incs, set_aside)
        await self._dead.write(set_aside)

    async def _request(self, method: str, path: str, body: bytes, what: str) -> Response:
        """One request, resent on 429/5xx/timeouts up to `retries` times (same body).

        Raises:
            DeliveryError: still failing after the retries, or 401/403/405/407.
        """
        backoff = self.retry_backoff
        backoff.reset()
        attempt = 0
        while True:
            try:
                resp = await self._client.request(method, path, body, self._headers)
                if resp.status < 500 and resp.status not in (408, 429):
                    if resp.status in _FATAL:
                        self.counter.EventWriteFail += 1
                        raise DeliveryError(
                            f"{self.who}: {what} refused with HTTP {resp.status} by {resp.base}",
                            retriable=False,
                        )
                    return resp
                last = f"HTTP {resp.status} from {resp.base}"
            except DeliveryError as e:
                if not e.retriable:
                    raise
                self.counter.ConnectionFailedCount += 1
                last = str(e)
            attempt += 1
            if attempt > self.config.retries or self._stopping.is_set():
                self.counter.EventWriteFail += 1
                raise DeliveryError(f"{self.who}: {what} failed after {attempt} tries: {last}")
            self.counter.EventRetryCount += 1
            await backoff.wait(self._stopping)

    async def _put(
        self, puts: list[Put], events: list[Event], set_aside: list[dict[str, Any]]
    ) -> None:
        """One multi-row put; on a refusal, halves until the refused rows are found."""
        body = self._encode(puts, self._family)
        resp = await self._request("PUT", self._table_path + "/fakerow", body, "put")
        if 200 <= resp.status < 300:
            return
        if resp.status not in _REFUSED and resp.status >= 300:
            self.counter.EventWriteFail += 1
            raise DeliveryError(f"{self.who}: put answered HTTP {resp.status} by {resp.base}")
        if len(puts) == 1:
            row, cells = puts[0]
            fam = self._family + b":"
            set_aside.append(
                {
                    "status": resp.status,
                    "error": resp.body[:300].decode("utf-8", "replace").strip(),
                    "row": row.decode("utf-8", "replace"),
                    "columns": [(fam + q).decode("utf-8", "replace") for q, _ in cells],
                    **event_record(events[0]),
                }
            )  # fmt: skip
            return
        half = len(puts) // 2
        await self._put(puts[:half], events[:half], set_aside)
        await self._put(puts[half:], events[half:], set_aside)

    async def _increments(self, incs: list[Increment], set_aside: list[dict[str, Any]]) -> None:
        """Flume's increments: summed per row and column with `coalesceIncrements`, else
        one request each; sent 16 at a time."""
        requests: list[tuple[bytes, list[tuple[bytes, int]]]]
        if self.config.coalesceIncrements:
            sums: dict[bytes, dict[bytes, int]] = {}
            for row, col, n in incs:
                cols = sums.setdefault(row, {})
                cols[col] = cols.get(col, 0) + n
            requests = [(row, list(cols.items())) for row, cols in sums.items()]
        else:
            requests = [(row, [(col, n)]) for row, col, n in incs]
        for i in range(0, len(requests), 16):
            chunk = requests[i : i + 16]
            results = await asyncio.gather(*(self._increment(r, c) for r, c in chunk))
            for (row, pairs), status in zip(chunk, results, strict=True):
                if status is not None:
                    set_aside.append(
                        {
                            "status": status,
                            "error": f"increment refused with HTTP {status}",
                            "increment": {
                                "row": row.decode("utf-8", "replace"),
                                "columns": {c.decode("utf-8", "replace"): n for c, n in pairs},
                            },
                        }
                    )

    async def _increment(self, row: bytes, cols: list[tuple[bytes, int]]) -> int | None:
        """One increment request; the refusing status, or None when applied."""
        puts: list[Put] = [(row, [(c, str(n).encode()) for c, n in cols])]
        # The row key travels in the CellSet (binary-safe); the path's row is a placeholder.
        path = self._table_path + "/fakerow?check=increment"
        resp = await self._request("POST", path, self._encode(puts, self._family), "increment")
        return None if 200 <= resp.status < 300 else resp.status


class HBase2Sink(HBaseSink):
    """Flume's HBase2Sink: the same sink (the gateway hides the HBase version)."""

    flume_name = "hbase2"


class AsyncHBaseSink(HBaseSink):
    """Flume's AsyncHBaseSink: the same sink; `async.*` keys are ignored."""

    flume_name = "asynchbase"
