"""Sink `http` (Flume 1.9 `org.apache.flume.sink.http.HttpSink`): POSTs events to an
HTTP endpoint and decides, per answer status, whether to commit or roll back, whether to
back off, and whether the events count as drained.

Flume's keys: `endpoint`, `connectTimeout` / `requestTimeout` (5000 ms),
`contentTypeHeader` / `acceptHeader` (`text/plain`), `defaultBackoff` (true),
`defaultRollback` (true), `defaultIncrementMetrics` (false), and per status
`backoff.CODE`, `rollback.CODE`, `incrementMetrics.CODE`, where CODE is a status (`503`)
or a class (`5XX`); the exact code wins over the class, the class over the default.

As Flume, one event is one POST of its body (`batchSize` 1: one event per take). Added:

- `batch.format = ndjson | json_array`: one POST per take of `batchSize` events, each
  event as `{"headers": {...}, "body": "..."}` (the JSON that Flume's HTTP source
  accepts), one per line or in one array; the decision applies to the whole batch.
- With `batchSize` > 1 and no `batch.format`, the events of a take are POSTed one after
  another. The first one's answer acts as in Flume. A later event whose answer rolls
  back (or that gets no answer) is sent again in place, after the backoff its answer
  asks for, so events already delivered are not sent again; a stop meanwhile rolls the
  take back (duplicates bounded by `batchSize`).
- `headers.NAME = VALUE`: request headers, `%{name}` in VALUE replaced by that event
  header (in batch mode, of the first event).
- A 2XX answer commits, does not back off and counts as drained unless a `*.CODE` key
  for it says otherwise (Flume's defaults would roll back a 200 and send it forever).
- An answer that commits without being 2XX (a `rollback.4XX = false`, say) writes the
  events to `deadLetter.path` when set, and counts them (EventDeadLetterCount).
- https with `caFile` / `trustAllCerts`, basic auth, API key, gzip (`compression`).

A connection error or timeout rolls back and backs off (as Flume). An empty body is
committed without a request (as Flume).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from flumed.config.keys import key, prefix
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.lifecycle import Backoff
from flumed.logs import RateLimitedLog
from flumed.sinks.base import TAKE_TIMEOUT, Status
from flumed.sinks.httpclient import (
    DeadLetterFile,
    DeadLetterSinkCounter,
    HttpClient,
    HttpClientKeys,
    HttpClientSink,
    event_record,
)
from flumed.tap import HUB

log = logging.getLogger("flumed.sinks.http")

_CODE = re.compile(r"^[1-5](\d\d|XX)$")
_ESCAPE = re.compile(r"%\{([^}]*)\}")
_FLAGS = ("backoff", "rollback", "incrementMetrics")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSinkConfig(HttpClientKeys):
    endpoint: str = key(doc="URL to POST to (http:// or https://).")
    contentTypeHeader: str = key(
        "",
        doc="Content-Type; default text/plain, or application/x-ndjson / application/json "
        "in batch mode.",
    )
    acceptHeader: str = key("text/plain", doc="Accept header.")
    defaultBackoff: bool = key(True, doc="Back off after an answer no backoff.CODE names.")
    defaultRollback: bool = key(True, doc="Roll back after an answer no rollback.CODE names.")
    defaultIncrementMetrics: bool = key(
        False, doc="Count as drained after an answer no incrementMetrics.CODE names."
    )
    backoff: dict[str, str] = prefix("backoff", doc="backoff.CODE / backoff.NXX = true|false.")
    rollback: dict[str, str] = prefix("rollback", doc="rollback.CODE / rollback.NXX.")
    incrementMetrics: dict[str, str] = prefix(
        "incrementMetrics", doc="incrementMetrics.CODE / incrementMetrics.NXX."
    )
    batchSize: int = key(1, ge=1, doc="Events per take (Flume: 1).")
    batch_format: Literal["none", "ndjson", "json_array"] = key(
        "none", name="batch.format", doc="One POST per take in this format; none: per event."
    )
    headers: dict[str, str] = prefix("headers", doc="headers.NAME = VALUE (`%{header}` escapes).")

    def check(self) -> list[str]:
        problems = self.http_problems()
        if not re.match(r"^https?://[^/]", self.endpoint):
            problems.append(f"key 'endpoint': not an http:// or https:// URL: {self.endpoint!r}")
        for flag in _FLAGS:
            for code, value in getattr(self, flag).items():
                if not _CODE.match(code.upper()):
                    problems.append(
                        f"key '{flag}.{code}': not a status code (like 503) or class (like 5XX)"
                    )
                if str(value).strip().lower() not in ("true", "false"):
                    problems.append(f"key '{flag}.{code}': expected true or false, got {value!r}")
        return problems


def _table(raw: dict[str, str]) -> dict[str, bool]:
    return {code.upper(): str(v).strip().lower() == "true" for code, v in raw.items()}


class Decision:
    """Flume's per-status lookup: exact code, then class (`4XX`), then 2XX = success,
    then the default. Results are cached per status."""

    __slots__ = ("_cache", "_defaults", "_tables")

    def __init__(self, cfg: HttpSinkConfig) -> None:
        self._tables = [_table(getattr(cfg, f)) for f in _FLAGS]
        self._defaults = [cfg.defaultBackoff, cfg.defaultRollback, cfg.defaultIncrementMetrics]
        self._cache: dict[int, tuple[bool, bool, bool]] = {}

    def __call__(self, status: int) -> tuple[bool, bool, bool]:
        """(backoff, rollback, incrementMetrics) for an answer status."""
        hit = self._cache.get(status)
        if hit is not None:
            return hit
        code = str(status)
        cls = code[0] + "XX"
        success = (False, False, True)
        out = []
        for i, table in enumerate(self._tables):
            v = table.get(code)
            if v is None:
                v = table.get(cls)
            if v is None:
                v = success[i] if 200 <= status < 300 else self._defaults[i]
            out.append(v)
        hit = (out[0], out[1], out[2])
        self._cache[status] = hit
        return hit


_quote = json.encoder.encode_basestring


def _escape(template: str, headers: dict[str, str]) -> str:
    """`%{name}` replaced by that event header; CR/LF become spaces (a header value
    cannot hold them, and an event must not be able to add request headers)."""
    if "%{" not in template:
        return template
    out = _ESCAPE.sub(lambda m: headers.get(m[1], ""), template)
    return out.replace("\r", " ").replace("\n", " ") if "\r" in out or "\n" in out else out


class HttpSink(HttpClientSink):
    """Posts takes to `endpoint`; see the module docstring for what each answer does."""

    Config = HttpSinkConfig
    config: HttpSinkConfig
    counter: DeadLetterSinkCounter
    counter_class = DeadLetterSinkCounter

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        cfg = self.config
        self.decide = Decision(cfg)
        self._client = HttpClient(f"http sink {name}", [cfg.endpoint], cfg)
        self._dead = DeadLetterFile(f"http sink {name}", cfg.dead_letter_path, self.counter)
        content_type = (
            cfg.contentTypeHeader
            or {
                "none": "text/plain",
                "ndjson": "application/x-ndjson",
                "json_array": "application/json",
            }[cfg.batch_format]
        )
        self._base_headers = {"Content-Type": content_type, "Accept": cfg.acceptHeader}
        self._backoff = Backoff(1.0, 5.0)
        self._warn = RateLimitedLog(log)
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def _headers(self, event: Event) -> dict[str, str]:
        extra = self.config.headers
        if not extra:
            return self._base_headers
        return {**self._base_headers, **{k: _escape(v, event.headers) for k, v in extra.items()}}

    def _body(self, events: list[Event]) -> bytes:
        enc, q = self._encoder.encode, _quote
        try:
            # The hot path, inlined: one f-string per event, json's C string escaper.
            objs = [
                f'{{"headers":{enc(e.headers) if e.headers else "{}"},"body":{q(e.body.decode())}}}'
                for e in events
            ]
        except UnicodeDecodeError:
            objs = [self._object(e) for e in events]
        if self.config.batch_format == "ndjson":
            return ("\n".join(objs) + "\n").encode()
        return ("[" + ",".join(objs) + "]").encode()

    def _object(self, e: Event) -> str:
        """`{"headers":{...},"body":"..."}`; a body that is not UTF-8 as `body_base64`."""
        try:
            text = e.body.decode("utf-8")
        except UnicodeDecodeError:
            return self._encoder.encode(event_record(e))
        h = self._encoder.encode(e.headers) if e.headers else "{}"
        return f'{{"headers":{h},"body":{_quote(text)}}}'

    async def _post(self, events: list[Event], body: bytes) -> int:
        try:
            resp = await self._client.request("POST", "", body, self._headers(events[0]))
        except DeliveryError:
            self.counter.EventWriteFail += 1
            self.counter.ConnectionFailedCount += 1
            raise
        return resp.status

    async def _send(self, group: list[Event], body: bytes, first: bool) -> tuple[int, bool, bool]:
        """POST one request and decide: (status, backoff, rollback).

        The first request of a take follows Flume exactly. A later one (one event per
        request, `batchSize` > 1) is resent in place while its answer says roll back, or
        no answer comes, waiting first when the answer says back off: rolling the take
        back would resend the events already delivered, and at a steady failure rate a
        take of many requests would never complete. A stop ends that; the take then
        rolls back.

        Raises:
            DeliveryError: no answer to the first request.
        """
        counter = self.counter
        while True:
            try:
                status = await self._post(group, body)
            except DeliveryError as e:
                if first or self._stopping.is_set():
                    raise
                counter.EventRetryCount += 1
                self._warn.warn("%s; sending it again", e)
                await self._backoff.wait(self._stopping)
                if self._stopping.is_set():
                    raise
                continue
            b, r, m = self.decide(status)
            if m:
                counter.EventDrainSuccessCount += len(group)
            if not r or first or self._stopping.is_set():
                return status, b, r
            counter.EventRetryCount += 1
            counter.EventWriteFail += 1
            self._warn.warn(
                "http sink %s: HTTP %d from %s; sending the event again",
                self.name,
                status,
                self.config.endpoint,
            )
            if b:
                await self._backoff.wait(self._stopping)
            if self._stopping.is_set():
                return status, b, r

    async def process(self) -> Status:
        """One take: post, then commit or roll back as the answers decide.

        Raises:
            DeliveryError: no answer (after rolling back), or an answer that rolls back
                and backs off.
        """
        n = self.batch_size
        counter = self.counter
        backoff = rollback = False
        async with self.channel.transaction() as tx:
            events = await tx.take_batch(n, TAKE_TIMEOUT)
            counter.batch(len(events), n)
            if not events:
                return Status.BACKOFF
            counter.EventDrainAttemptCount += len(events)
            if self.config.batch_format == "none":
                groups = [[e] for e in events if e.body]  # Flume commits empty bodies unsent
            else:
                groups = [events]
            set_aside: list[dict[str, Any]] = []
            status = 0
            single = self.config.batch_format == "none"
            for i, group in enumerate(groups):
                body = group[0].body if single else self._body(group)
                status, b, r = await self._send(group, body, first=i == 0)
                backoff = backoff or b
                if r:
                    rollback = True
                    break
                if not 200 <= status < 300:
                    set_aside += [
                        {"status": status, "error": f"HTTP {status}", **event_record(e)}
                        for e in group
                    ]
            if rollback:
                await tx.rollback()
                counter.EventWriteFail += 1
                msg = f"http sink {self.name}: HTTP {status} from {self.config.endpoint}"
                if backoff:
                    raise DeliveryError(msg + "; rolled back, backing off")
                self._warn.warn("%s; rolled back for retry", msg)
                return Status.READY
            await self._dead.write(set_aside)
        HUB.offer(self.name, events)
        if backoff:
            await self._backoff.wait(self._stopping)
            return Status.BACKOFF
        self._backoff.reset()
        return Status.READY
