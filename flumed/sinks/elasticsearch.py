"""Sink `elasticsearch` (Flume `org.apache.flume.sink.elasticsearch.ElasticSearchSink`):
indexes events into Elasticsearch or OpenSearch through the `_bulk` API, one request per
take, and reads every item's result.

Flume's keys: `hostNames` (comma list of host:port, tried in turn; port 9200),
`indexName` (flume), `indexType` (logs; sent only to servers that still have types,
i.e. Elasticsearch before 7), `clusterName` (accepted), `batchSize` (100), `ttl` (accepted
and warned about: Elasticsearch removed `_ttl`), `serializer` (Flume's
`ElasticSearchLogStashEventSerializer`, default, or `ElasticSearchDynamicSerializer`),
`indexNameBuilder` (`TimeBasedIndexNameBuilder`, default: `indexName-<date>` with
`indexNameBuilder.dateFormat` (yyyy-MM-dd) in `indexNameBuilder.timeZone` (Etc/UTC) of
the event's `timestamp` header, else now; or `SimpleIndexNameBuilder`: `indexName`).
`%{header}` in `indexName` / `indexType` is replaced by the event's header.

Added: `https`, basic auth, `apiKey`, `caFile`, `compression = gzip`, `idHeader` (the
document `_id` from that event header), `retries`, `deadLetter.path`.

Per take: one `_bulk` request. Items answered 429 or 5xx are sent again (only they), after
a growing pause, up to `retries` times within the same transaction; items refused for
good (400 mapping errors and every other 4xx), documents too large alone (413; a 413
request is first halved until it fits), and events the serializer cannot turn into
a document (a `timestamp` header that is not a number), are written to the dead-letter
file (one JSON line each: the event, the document, the index, the status and the error)
and counted as EventDeadLetterCount. The take commits only once every item is indexed or
set aside. A request that fails as a whole (no host answers, 429, 5xx, an unreadable
answer), or items still failing after `retries`, roll the take back and the runner backs
off; items indexed before are indexed again (duplicates bounded by a batch; none with
`idHeader`).
"""

from __future__ import annotations

import json
import logging
import re
import time
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flumed.config.keys import key, prefix
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.lifecycle import Backoff
from flumed.sinks.httpclient import (
    DeadLetterFile,
    DeadLetterSinkCounter,
    HttpClient,
    HttpClientKeys,
    HttpClientSink,
    event_record,
)

log = logging.getLogger("flumed.sinks.elasticsearch")

_PKG = "org.apache.flume.sink.elasticsearch."
SERIALIZERS = {
    "elasticsearchlogstasheventserializer": "logstash",
    "elasticsearchdynamicserializer": "dynamic",
    "logstash": "logstash",
    "dynamic": "dynamic",
}
BUILDERS = {
    "timebasedindexnamebuilder": "time",
    "simpleindexnamebuilder": "simple",
    "timebased": "time",
    "simple": "simple",
}


def _short(name: str) -> str:
    return name.strip().rsplit(".", 1)[-1].lower()


# -- Java date patterns ----------------------------------------------------------------

_MONTHS = "January February March April May June July August September October November December"
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
_TOKEN = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|[^A-Za-z']+")


class JavaDateFormat:
    """`format(ms)` as Java's SimpleDateFormat / commons-lang FastDateFormat would, for
    the letters an index name uses: G y M d H h k K m s S E D a Z X z u, and 'quoted'
    text. Built by the config check; raises ValueError naming an unknown letter."""

    def __init__(self, pattern: str, tz: str) -> None:
        try:
            self.zone = zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r} (an IANA name like Etc/UTC)") from None
        self.parts: list[tuple[str, int] | str] = []
        pos = 0
        for m in _TOKEN.finditer(pattern):
            if m.start() != pos:
                raise ValueError(f"cannot read date pattern {pattern!r}")
            pos = m.end()
            tok = m.group(0)
            if tok.startswith("'"):
                self.parts.append(tok[1:-1].replace("''", "'") if tok != "''" else "'")
            elif tok[0].isalpha():
                if tok[0] not in "GyMdHhkKmsSEDaZXzuY":
                    raise ValueError(f"date pattern letter {tok[0]!r} is not supported")
                self.parts.append((tok[0], len(tok)))
            else:
                self.parts.append(tok)
        if pos != len(pattern):
            raise ValueError(f"cannot read date pattern {pattern!r} (unclosed quote?)")
        self._cached = lru_cache(maxsize=256)(self._format_second)
        self._has_millis = any(isinstance(p, tuple) and p[0] == "S" for p in self.parts)

    def format(self, ms: int) -> str:
        if self._has_millis:
            return self._format(ms)
        return self._cached(ms // 1000)

    def _format_second(self, second: int) -> str:
        return self._format(second * 1000)

    def _format(self, ms: int) -> str:
        import datetime as dt

        t = dt.datetime.fromtimestamp(ms / 1000, self.zone)
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            c, n = p
            if c in "yY":
                out.append(f"{t.year % 100:02d}" if n == 2 else f"{t.year:0{n}d}")
            elif c == "M":
                if n >= 4:
                    out.append(_MONTHS.split()[t.month - 1])
                elif n == 3:
                    out.append(_MONTHS.split()[t.month - 1][:3])
                else:
                    out.append(f"{t.month:0{n}d}")
            elif c == "d":
                out.append(f"{t.day:0{n}d}")
            elif c == "H":
                out.append(f"{t.hour:0{n}d}")
            elif c == "k":
                out.append(f"{t.hour or 24:0{n}d}")
            elif c == "K":
                out.append(f"{t.hour % 12:0{n}d}")
            elif c == "h":
                out.append(f"{t.hour % 12 or 12:0{n}d}")
            elif c == "m":
                out.append(f"{t.minute:0{n}d}")
            elif c == "s":
                out.append(f"{t.second:0{n}d}")
            elif c == "S":
                out.append(f"{ms % 1000:0{n}d}")
            elif c == "E":
                day = _DAYS.split()[t.weekday()]
                out.append(day if n >= 4 else day[:3])
            elif c == "u":
                out.append(f"{t.isoweekday():0{n}d}")
            elif c == "D":
                out.append(f"{t.timetuple().tm_yday:0{n}d}")
            elif c == "a":
                out.append("AM" if t.hour < 12 else "PM")
            elif c == "G":
                out.append("AD")
            elif c in "ZX":
                off = t.utcoffset() or dt.timedelta(0)
                minutes = int(off.total_seconds() // 60)
                sign = "-" if minutes < 0 else "+"
                hh, mm = divmod(abs(minutes), 60)
                if c == "X" and minutes == 0:
                    out.append("Z")
                elif n == 1 and c == "X":
                    out.append(f"{sign}{hh:02d}")
                elif (n == 2 and c == "Z") or (n >= 3 and c == "X"):
                    out.append(f"{sign}{hh:02d}:{mm:02d}")
                else:
                    out.append(f"{sign}{hh:02d}{mm:02d}")
            elif c == "z":
                out.append(t.tzname() or "")
        return "".join(out)


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ElasticSearchSinkConfig(HttpClientKeys):
    hostNames: str = key(doc="Comma list of host:port (port 9200) or URLs, tried in turn.")
    indexName: str = key("flume", doc="Index (prefix, with the time-based builder).")
    indexType: str = key("logs", doc="Document type; sent only to servers before 7.0.")
    clusterName: str = key("elasticsearch", doc="Accepted for Flume configs; unused.")
    batchSize: int = key(100, ge=1, doc="Events per take, one _bulk request.")
    ttl: str = key("", doc="Accepted and warned about: Elasticsearch removed _ttl.")
    # `serializer` (the class) and `serializer.*` in one prefix table: the class arrives
    # under "" (a key and a prefix of one name cannot both be fields). Same for the builder.
    serializerTable: dict[str, str] = prefix(
        "serializer",
        doc="ElasticSearchLogStashEventSerializer (default) or ElasticSearchDynamicSerializer.",
    )
    builderTable: dict[str, str] = prefix(
        "indexNameBuilder",
        doc="TimeBasedIndexNameBuilder (default) or SimpleIndexNameBuilder; "
        "indexNameBuilder.dateFormat (yyyy-MM-dd), indexNameBuilder.timeZone (Etc/UTC).",
    )
    client: dict[str, str] = prefix(
        "client", doc="`client` (transport/rest) and `client.*`: accepted; flumed speaks HTTP."
    )
    https: bool = key(False, doc="https:// for host:port entries.")
    idHeader: str = key("", doc="Event header whose value is the document _id.")
    retries: int = key(5, ge=0, doc="Times 429/5xx items are resent within one take.")
    requestTimeout: int = key(30_000, ge=1, doc="Milliseconds to wait for a _bulk answer.")

    @property
    def serializer(self) -> str:
        return str(self.serializerTable.get("", _PKG + "ElasticSearchLogStashEventSerializer"))

    @property
    def indexNameBuilder(self) -> str:
        return str(self.builderTable.get("", _PKG + "TimeBasedIndexNameBuilder"))

    @property
    def builder_keys(self) -> dict[str, str]:
        return {k: v for k, v in self.builderTable.items() if k}

    def check(self) -> list[str]:
        problems = self.http_problems()
        if _short(self.serializer) not in SERIALIZERS:
            problems.append(
                f"key 'serializer': {self.serializer!r} is not available; use "
                f"{_PKG}ElasticSearchLogStashEventSerializer or "
                f"{_PKG}ElasticSearchDynamicSerializer"
            )
        if _short(self.indexNameBuilder) not in BUILDERS:
            problems.append(
                f"key 'indexNameBuilder': {self.indexNameBuilder!r} is not available; use "
                f"{_PKG}TimeBasedIndexNameBuilder or {_PKG}SimpleIndexNameBuilder"
            )
        unknown = set(self.builder_keys) - {"dateFormat", "timeZone"}
        if unknown:
            problems.append(f"unknown key(s): indexNameBuilder.{', '.join(sorted(unknown))}")
        try:
            self.date_format()
        except ValueError as e:
            problems.append(f"key 'indexNameBuilder.dateFormat'/'timeZone': {e}")
        if not self.hosts():
            problems.append("key 'hostNames': no host given")
        return problems

    def date_format(self) -> JavaDateFormat:
        fmt = self.builder_keys.get("dateFormat", "").strip() or "yyyy-MM-dd"
        tz = self.builder_keys.get("timeZone", "").strip() or "Etc/UTC"
        return JavaDateFormat(fmt, tz)

    def hosts(self) -> list[str]:
        out = []
        scheme = "https" if self.https else "http"
        for h in self.hostNames.split(","):
            h = h.strip()
            if not h:
                continue
            if "://" not in h:
                h = f"{scheme}://{h}"
            if not re.search(r":\d+/?$", h.split("://", 1)[1]):
                h = h.rstrip("/") + ":9200"
            out.append(h)
        return out


# -- documents --------------------------------------------------------------------------

_enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_quote = json.encoder.encode_basestring
_LONG = re.compile(r"^[+-]?\d+$")
_ESCAPE = re.compile(r"%\{([^}]*)\}")
_NO_ERRORS = re.compile(rb'^\s*\{(?:"took"\s*:\s*\d+\s*,\s*)?"errors"\s*:\s*false\s*,')


class DocumentError(ValueError):
    """This event cannot become a document (it goes to the dead-letter file)."""


def _blank(v: str | None) -> bool:
    return v is None or not v.strip()


def field_json(data: bytes) -> str:
    """A field's value as Flume's ContentBuilderUtil.appendField writes it: bytes that
    parse as JSON (Elasticsearch's content sniffing looks for a `{`) are embedded as
    JSON; anything else is a string (decoded as UTF-8, bad bytes replaced, as Java)."""
    text = data.decode("utf-8", "replace")
    if len(data) >= 2 and b"{" in data:
        try:
            return _enc(json.loads(text))
        except ValueError:
            pass
    return _quote(text)


def _long(v: str, what: str) -> int:
    if not _LONG.match(v):
        raise DocumentError(f"header {what}={v!r} is not a number (milliseconds)")
    return int(v)


def iso_millis(ms: int) -> str:
    """A date as Elasticsearch's XContentBuilder writes a java.util.Date (UTC, ms)."""
    secs, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{milli:03d}Z"


_LOGSTASH_HEADERS = (
    ("source", "@source"),
    ("type", "@type"),
    ("host", "@source_host"),
    ("src_path", "@source_path"),
)


def logstash_document(e: Event) -> str:
    """The JSON document of Flume's ElasticSearchLogStashEventSerializer: `@message`
    (the body), `@timestamp` (from `timestamp`), `@source`, `@type`, `@source_host`,
    `@source_path` (from `source`, `type`, `host`, `src_path`, each unless the `@` header
    is set), and `@fields` with every header."""
    h = e.headers
    if not h and b"{" not in e.body:
        return f'{{"@message":{_quote(e.body.decode("utf-8", "replace"))},"@fields":{{}}}}'
    parts = [f'"@message":{field_json(e.body)}']
    ts = h.get("timestamp")
    if not _blank(ts) and _blank(h.get("@timestamp")):
        parts.append(f'"@timestamp":"{iso_millis(_long(ts, "timestamp"))}"')  # type: ignore[arg-type]
    for src, dst in _LOGSTASH_HEADERS:
        v = h.get(src)
        if not _blank(v) and _blank(h.get(dst)):
            parts.append(f'"{dst}":{field_json(v.encode())}')  # type: ignore[union-attr]
    fields = ",".join(f"{_quote(k)}:{field_json(v.encode())}" for k, v in h.items())
    parts.append(f'"@fields":{{{fields}}}')
    return "{" + ",".join(parts) + "}"


def dynamic_document(e: Event) -> str:
    """The JSON document of Flume's ElasticSearchDynamicSerializer: `body`, then each
    header as a field of its own."""
    values = {"body": field_json(e.body)}
    for k, v in e.headers.items():
        values[k] = field_json(v.encode())
    return "{" + ",".join(f"{_quote(k)}:{v}" for k, v in values.items()) + "}"


def _escape(template: str, headers: dict[str, str]) -> str:
    if "%{" not in template:
        return template
    return _ESCAPE.sub(lambda m: headers.get(m[1], ""), template)


#: One document of a take: (event, index, _id or None, its NDJSON action and source lines).
#: A tuple: built once per event on the hot path.
_Entry = tuple[Event, str, str | None, bytes]


class ElasticSearchSink(HttpClientSink):
    """Bulk-indexes takes; see the module docstring for the per-item contract."""

    Config = ElasticSearchSinkConfig
    config: ElasticSearchSinkConfig
    counter: DeadLetterSinkCounter
    counter_class = DeadLetterSinkCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        cfg = self.config
        who = f"elasticsearch sink {name}"
        self._client = HttpClient(who, cfg.hosts(), cfg)
        self._dead = DeadLetterFile(who, cfg.dead_letter_path, self.counter)
        self._document = (
            logstash_document if SERIALIZERS[_short(cfg.serializer)] == "logstash"
            else dynamic_document
        )  # fmt: skip
        self._time_based = BUILDERS[_short(cfg.indexNameBuilder)] == "time"
        self._date = cfg.date_format()
        self._typeless: bool | None = None if cfg.indexType else True
        self._actions: dict[tuple[str, str], bytes] = {}
        self.retry_backoff = Backoff(0.2, 5.0)
        if cfg.ttl:
            log.warning(
                "%s: key 'ttl' (%s) is ignored: Elasticsearch removed _ttl in 5.0; "
                "expire old indices with an ILM/ISM policy instead.",
                who,
                cfg.ttl,
            )

    async def prepare(self) -> None:
        """Before the first take: ask the server's version (types went away in 7.0)."""
        if self._typeless is not None:
            return
        resp = await self._client.request("GET", "/")
        version = ""
        if resp.status == 200:
            try:
                info = json.loads(resp.body)
                version = str(info["version"]["number"])
                opensearch = info["version"].get("distribution") == "opensearch"
            except (ValueError, KeyError, TypeError):
                opensearch = False
        if not version:
            log.info("%s: server version unknown (GET / answered %d); sending no _type.",
                     self.name, resp.status)  # fmt: skip
            self._typeless = True
            return
        m = re.match(r"\d+", version)
        self._typeless = opensearch or (int(m[0]) if m else 99) >= 7
        kind = "OpenSearch" if opensearch else "Elasticsearch"
        typ = "no _type" if self._typeless else f"_type {self.config.indexType!r}"
        log.info("%s: %s %s; %s.", self.name, kind, version, typ)

    def _action(self, index: str, typ: str, doc_id: str | None) -> bytes:
        """The bulk action line; cached per (index, type) when there is no _id."""
        if doc_id is None:
            action = self._actions.get((index, typ))
            if action is not None:
                return action
        meta = {"_index": index, **({"_type": typ} if typ else {})}
        if doc_id is not None:
            meta["_id"] = doc_id
            return _enc({"index": meta}).encode() + b"\n"
        action = _enc({"index": meta}).encode() + b"\n"
        if len(self._actions) > 1024:
            self._actions.clear()
        self._actions[(index, typ)] = action
        return action

    def _entries(self, events: list[Event], set_aside: list[dict[str, Any]]) -> list[_Entry]:
        """The documents of a take (the hot path: one pass, locals only); events the
        serializer refuses are added to `set_aside`."""
        cfg = self.config
        name, id_header = cfg.indexName, cfg.idHeader
        time_based, fmt, document = self._time_based, self._date.format, self._document
        typ_template = "" if self._typeless else cfg.indexType
        now = int(time.time() * 1000)
        # Events without headers share one index and one action line per take.
        plain_index = _escape(name, {})
        if time_based:
            plain_index = f"{plain_index}-{fmt(now)}"
        plain_action = self._action(plain_index, _escape(typ_template, {}), None)
        out: list[_Entry] = []
        append = out.append
        for e in events:
            h = e.headers
            if not h:
                doc = document(e)
                append((e, plain_index, None, plain_action + doc.encode() + b"\n"))
                continue
            try:
                index = _escape(name, h)
                if time_based:
                    ts = h.get("timestamp")
                    if _blank(ts):
                        ts = h.get("@timestamp")
                    ms = now if _blank(ts) else _long(ts, "timestamp")  # type: ignore[arg-type]
                    index = f"{index}-{fmt(ms)}"
                doc_id = h.get(id_header) if id_header else None
                typ = _escape(typ_template, h) if typ_template else ""
                doc = document(e)
            except DocumentError as err:
                error = {"type": "flumed_serializer", "reason": str(err)}
                set_aside.append({"status": 0, "error": error, **event_record(e)})
                continue
            action = self._action(index, typ, doc_id)
            append((e, index, doc_id, action + doc.encode() + b"\n"))
        return out

    @staticmethod
    def _dead_record(entry: _Entry, status: int, error: Any) -> dict[str, Any]:
        event, index, doc_id, data = entry
        return {
            "index": index,
            "id": doc_id,
            "status": status,
            "error": error,
            "document": json.loads(data.split(b"\n", 1)[1]),
            **event_record(event),
        }

    async def deliver(self, events: list[Event]) -> None:
        """Index `events`; return once each is indexed or in the dead-letter file.

        Raises:
            DeliveryError: the request failed as a whole, or items still failed with
                429/5xx after `retries` resends.
        """
        set_aside: list[dict[str, Any]] = []
        pending = self._entries(events, set_aside)
        attempt = 0
        backoff = self.retry_backoff
        backoff.reset()
        while pending:
            retry = await self._bulk(pending, set_aside)
            if not retry:
                break
            attempt += 1
            self.counter.EventRetryCount += len(retry)
            if attempt > self.config.retries or self._stopping.is_set():
                self.counter.EventWriteFail += 1
                raise DeliveryError(
                    f"elasticsearch sink {self.name}: {len(retry)} of {len(events)} items "
                    f"still refused after {attempt - 1} retries (last: {self._last_error})"
                )
            await backoff.wait(self._stopping)
            pending = retry
        await self._dead.write(set_aside)

    _last_error = ""

    async def _bulk(self, pending: list[_Entry], set_aside: list[dict[str, Any]]) -> list[_Entry]:
        """One `_bulk` request; returns the items to send again, adds refused ones to
        `set_aside`. Raises DeliveryError when the request failed as a whole."""
        body = b"".join([en[3] for en in pending])
        try:
            resp = await self._client.request(
                "POST", "/_bulk", body, {"Content-Type": "application/x-ndjson"}
            )
        except DeliveryError:
            self.counter.EventWriteFail += 1
            self.counter.ConnectionFailedCount += 1
            raise
        if resp.status == 413:
            # Over the server's http.max_content_length: halve until each part fits; a
            # document too large alone is set aside.
            if len(pending) == 1:
                set_aside.append(self._dead_record(pending[0], 413, "request entity too large"))
                return []
            half = len(pending) // 2
            return await self._bulk(pending[:half], set_aside) + await self._bulk(
                pending[half:], set_aside
            )
        if resp.status != 200:
            self.counter.EventWriteFail += 1
            raise DeliveryError(
                f"elasticsearch sink {self.name}: _bulk answered HTTP {resp.status} from "
                f"{resp.base}: {resp.body[:300].decode('utf-8', 'replace')}",
                retriable=resp.status == 429 or resp.status >= 500,
            )
        if _NO_ERRORS.search(resp.body, 0, 200):
            # Every item indexed (the top-level flag comes before the items): the common
            # case needs no parse of a thousand item results.
            return []
        try:
            answer = json.loads(resp.body)
            items = answer["items"]
            if len(items) != len(pending):
                raise ValueError(f"{len(items)} items for {len(pending)} documents")
        except (ValueError, KeyError, TypeError) as e:
            self.counter.EventWriteFail += 1
            raise DeliveryError(
                f"elasticsearch sink {self.name}: unreadable _bulk answer from {resp.base}: {e}"
            ) from None
        if not answer.get("errors"):
            return []
        retry = []
        for entry, item in zip(pending, items, strict=True):
            result: dict[str, Any] = next(iter(item.values()), {}) if isinstance(item, dict) else {}
            status = int(result.get("status", 0))
            if 200 <= status < 300:
                continue
            error = result.get("error")
            if status == 429 or status >= 500 or status == 408:
                self._last_error = f"{status} {json.dumps(error)[:200]}"
                retry.append(entry)
            else:
                set_aside.append(self._dead_record(entry, status, error))
        return retry
