"""Source `http`: events over HTTP POST (aiohttp), answered only after the commit.

Keys as Flume's HTTPSource: `bind` (0.0.0.0), `port`, `handler` (JSONHandler) with
`handler.*` settings, and TLS: `ssl` (alias `enableSSL`), `certificate`, `key`,
`key-password`, `exclude-protocols` (alias `excludeProtocols`), `include-protocols`
(see flumed.tls). flumed adds `maxRequestSize` (16 MiB): a longer body is answered 413.
Flume's Jetty pass-through keys (`QueuedThreadPool.*`, `HttpConfiguration.*`,
`SslContextFactory.*`, `ServerConnector.*`) are accepted and ignored with a warning.

Handlers (`handler`):

- `JSONHandler` (`org.apache.flume.source.http.JSONHandler`, the default): a JSON array
  of `{"headers": {...}, "body": "text"}`; the body text is encoded in the request's
  charset (Content-Type `charset=`: UTF-8 (default), UTF-16 or UTF-32, as Java does).
- `BlobHandler` (`org.apache.flume.sink.solr.morphline.BlobHandler`,
  `org.apache.flume.source.http.BLOBHandler`): one event per request, the body as
  sent, headers from the query parameters (first value of each) plus `Content-Type`.
  `handler.maxBlobLength` (100000000): longer bodies are answered 413 (Flume truncates
  them). `handler.mandatoryParameters`: comma-separated query parameters a request
  must carry (else 400).
- a Python class path (`mypkg.handlers:MyHandler` or `mypkg.handlers.MyHandler`): a class
  whose `__init__(config: dict[str, str])` takes the `handler.*` keys (without the
  prefix) and whose `async parse(request: aiohttp.web.Request) -> list[Event]` reads
  the request; it raises `HTTPBadRequest` for a request it refuses (answered 400) and
  anything else for a failure of its own (answered 500).

Answers: 200 (empty body) once every event of the request is committed to the
channels; 400 with the reason for a request the handler refused (bad JSON, unsupported
charset, ...); 413 past `maxRequestSize` or `maxBlobLength`; 503 when a channel is full
(with `Retry-After: 1`; resend the request); 500 on any other failure; 403 for TRACE
and OPTIONS. All events of one request go into the channel as one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from flumed.config.keys import key, listen_claims, prefix
from flumed.errors import ChannelError, ChannelFullError, ComponentStartError
from flumed.event import Event
from flumed.http_server import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HTTP_IDLE_TIMEOUT,
    GuardedConnection,
    guard_middleware,
    guarded_factory,
)
from flumed.registry import import_from_string
from flumed.sources.server import ListenerKeys, ListeningSource, kw_only
from flumed.tls import TLS_IGNORED, ServerTlsKeys

log = logging.getLogger("flumed.sources.http")

DEFAULT_HANDLER = "org.apache.flume.source.http.JSONHandler"
#: How long `stop()` lets requests in flight finish.
STOP_GRACE = 5.0
MAX_BLOB_LENGTH = 100_000_000
#: Defaults of the request limits.
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_HEADERS = 1000
#: A JSON body longer than this is decoded element by element, yielding to the loop
#: every JSON_SLICE events, and refused as soon as it passes maxEventsPerRequest.
JSON_INCREMENTAL = 256 << 10
JSON_SLICE = 2000
_WS = re.compile(r"[ \t\n\r]*")


class HTTPBadRequest(Exception):
    """Raised by a handler for a request it cannot turn into events; answered 400."""


class HTTPTooLarge(HTTPBadRequest):
    """Raised by a handler for a request body over its limit; answered 413."""


class HTTPSourceHandler(Protocol):
    """The contract of a `handler` class (Flume's HTTPSourceHandler, asyncio-shaped).

    Built once per source in `start()` with the `handler.*` keys; `parse` is called
    once per request, possibly for several requests at once.
    """

    def __init__(self, config: dict[str, str]) -> None: ...

    async def parse(self, request: web.Request) -> list[Event]:
        """Read `request` and return its events.

        Raises:
            HTTPBadRequest: the request is malformed (answered 400 with the message).
        """
        ...


# -- JSON ------------------------------------------------------------------------------
_CHARSETS = {"utf-8": "utf-8", "utf-16": "utf-16", "utf-32": "utf-32"}


def _decode(raw: bytes, charset: str) -> str:
    """Decode as Java does: UTF-16/UTF-32 honour a byte-order mark, else big-endian."""
    if charset == "utf-8":
        return raw.decode("utf-8")
    if charset == "utf-16":
        bom = raw[:2] in (b"\xfe\xff", b"\xff\xfe")
        return raw.decode("utf-16" if bom else "utf-16-be")
    bom = raw[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")
    return raw.decode("utf-32" if bom else "utf-32-be")


def _encoder(charset: str) -> Any:
    """str → bytes as Java's String.getBytes(charset) (UTF-16: a BOM, big-endian)."""
    if charset == "utf-8":
        return str.encode
    if charset == "utf-16":
        return lambda s: b"\xfe\xff" + s.encode("utf-16-be")
    return lambda s: s.encode("utf-32-be")


def _header_value(name: str, v: Any, i: int) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if v is None:
        return None
    raise HTTPBadRequest(f"event {i}: header {name!r} must be a string, not {type(v).__name__}")


class JSONHandler:
    """Flume's JSONHandler: `[{"headers": {"k": "v"}, "body": "text"}, ...]`.

    Header values that are JSON numbers or booleans become their text (Gson does the
    same); a null header is left out; a missing body is empty.
    """

    #: Set by the source from its keys (None: no limit).
    max_events: int | None = None
    max_headers: int | None = None

    def __init__(self, config: dict[str, str]) -> None:
        if config:
            raise ValueError(f"JSONHandler takes no settings, got {', '.join(config)}")

    async def parse(self, request: web.Request) -> list[Event]:
        cs = request.charset
        charset = _CHARSETS.get(cs.lower()) if cs else "utf-8"
        if charset is None:
            raise HTTPBadRequest(
                f"unsupported charset {cs!r}: the JSON handler takes UTF-8, UTF-16 or UTF-32"
            )
        raw = await _read(request)
        try:
            text = _decode(raw, charset)
        except UnicodeDecodeError as e:
            raise HTTPBadRequest(f"request body is not valid {charset.upper()}: {e}") from None
        encode = _encoder(charset)
        try:
            if len(text) <= JSON_INCREMENTAL:
                data = json.loads(text)
                if not isinstance(data, list):
                    raise HTTPBadRequest(
                        'expected a JSON array of events [{"headers": {...}, "body": "..."}], '
                        f"got a JSON {type(data).__name__}"
                    )
                self._check_count(len(data))
                return self._events(data, 0, encode)
            return await self._parse_incrementally(text, encode)
        except ValueError as e:
            raise HTTPBadRequest(f"Request has invalid JSON syntax: {e}") from None
        except RecursionError:
            raise HTTPBadRequest("Request has invalid JSON: nested too deeply") from None

    def _check_count(self, n: int) -> None:
        if self.max_events is not None and n > self.max_events:
            raise HTTPTooLarge(
                f"request of {n} or more events exceeds maxEventsPerRequest {self.max_events}"
            )

    async def _parse_incrementally(self, text: str, encode: Any) -> list[Event]:
        """A long body, decoded one array element at a time: it yields to the loop every
        JSON_SLICE events and stops at the first event past the limit, so that neither
        time nor memory is spent on the rest. Raises ValueError on bad JSON."""
        decode = json.JSONDecoder().raw_decode
        skip = _WS.match
        pos = skip(text, 0).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] != "[":
            first = decode(text, pos)[0] if pos < len(text) else None
            raise HTTPBadRequest(
                'expected a JSON array of events [{"headers": {...}, "body": "..."}], '
                f"got a JSON {type(first).__name__}"
            )
        pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
        events: list[Event] = []
        items: list[Any] = []
        if text[pos : pos + 1] == "]":
            pos += 1
        else:
            while True:
                item, pos = decode(text, pos)
                items.append(item)
                if len(items) == JSON_SLICE:
                    self._check_count(len(events) + len(items))
                    events += self._events(items, len(events), encode)
                    items = []
                    await asyncio.sleep(0)
                pos = skip(text, pos).end()  # type: ignore[union-attr]
                sep = text[pos : pos + 1]
                pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
                if sep == "]":
                    break
                if sep != ",":
                    raise ValueError(f"expected ',' or ']' at char {pos - 1}")
        if text[pos:].strip():
            raise ValueError(f"extra data at char {pos}")
        self._check_count(len(events) + len(items))
        return events + self._events(items, len(events), encode)

    def _events(self, data: list[Any], first: int, encode: Any) -> list[Event]:
        """Events from decoded JSON items (`first`: the index of data[0] in the request)."""
        max_headers = self.max_headers if self.max_headers is not None else 1 << 62
        events: list[Event] = []
        add = events.append
        for i, item in enumerate(data, first):
            if type(item) is not dict:
                raise HTTPBadRequest(f"event {i}: expected an object with headers and body")
            h = item.get("headers")
            b = item.get("body")
            if h is None:
                h = {}
            elif type(h) is not dict:
                raise HTTPBadRequest(f"event {i}: headers must be an object of strings")
            elif len(h) > max_headers:
                raise HTTPTooLarge(
                    f"event {i}: {len(h)} headers exceed maxHeadersPerEvent {max_headers}"
                )
            elif not all(type(v) is str for v in h.values()):
                h = {k: s for k, v in h.items() if (s := _header_value(k, v, i)) is not None}
            if type(b) is not str:
                if b is None:
                    b = ""
                elif isinstance(b, (bool, int, float)):
                    b = json.dumps(b)
                else:
                    raise HTTPBadRequest(f"event {i}: body must be a string")
            try:
                add(Event(encode(b), h))
            except UnicodeEncodeError as e:
                raise HTTPBadRequest(f"event {i}: body is not valid Unicode: {e}") from None
        return events


class BlobHandler:
    """One event per request: the raw body, headers from the query string."""

    def __init__(self, config: dict[str, str]) -> None:
        cfg = dict(config)
        raw = cfg.pop("maxBlobLength", MAX_BLOB_LENGTH)
        mandatory = str(cfg.pop("mandatoryParameters", ""))
        if cfg:
            raise ValueError(
                f"BlobHandler: unknown setting(s) {', '.join('handler.' + k for k in cfg)} "
                "(known: handler.maxBlobLength, handler.mandatoryParameters)"
            )
        try:
            self.max_length = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"handler.maxBlobLength: expected an integer, got {raw!r}") from None
        if self.max_length <= 0:
            raise ValueError(f"handler.maxBlobLength must be > 0, got {self.max_length}")
        self.mandatory = [p.strip() for p in mandatory.split(",") if p.strip()]

    async def parse(self, request: web.Request) -> list[Event]:
        headers = {k: request.query.getone(k) for k in request.query}
        for p in self.mandatory:
            if p not in headers:
                raise HTTPBadRequest(f"Please specify {p} parameter in the request.")
        ctype = request.headers.get("Content-Type")
        if ctype is not None:
            headers["Content-Type"] = ctype
        if request.content_length is not None and request.content_length > self.max_length:
            raise HTTPTooLarge(
                f"body of {request.content_length} bytes exceeds maxBlobLength {self.max_length}"
            )
        body = await _read(request)
        if len(body) > self.max_length:
            raise HTTPTooLarge(f"body of {len(body)} bytes exceeds maxBlobLength {self.max_length}")
        return [Event(body, headers)]


async def _read(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise HTTPTooLarge(e.text or "request body too large") from None


_HANDLERS: dict[str, type] = {
    "jsonhandler": JSONHandler,
    "org.apache.flume.source.http.jsonhandler": JSONHandler,
    "blobhandler": BlobHandler,
    "org.apache.flume.sink.solr.morphline.blobhandler": BlobHandler,
    "org.apache.flume.source.http.blobhandler": BlobHandler,
}


def builtin_handler(name: str) -> type | None:
    return _HANDLERS.get(name.strip().lower())


# -- the source --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HTTPSourceConfig(ListenerKeys, ServerTlsKeys):
    port: int = key(ge=0, le=65535)
    bind: str = key("0.0.0.0")
    # `handler` and `handler.*` in one family: "" is the handler itself (see handler_name).
    handler: dict[str, Any] = prefix(
        "handler", doc="JSONHandler | BlobHandler | a Python class path; handler.* settings"
    )
    maxRequestSize: int = key(16 * 1024 * 1024, ge=1, doc="Longest body in bytes (else 413).")
    maxEventsPerRequest: int = key(
        DEFAULT_MAX_EVENTS, ge=1, doc="Most events in one request (else 413, nothing committed)."
    )
    maxHeadersPerEvent: int = key(
        DEFAULT_MAX_HEADERS, ge=1, doc="Most headers of one event (else 413, nothing committed)."
    )
    header_timeout: float = key(
        DEFAULT_HEADER_TIMEOUT,
        name="header-timeout",
        ge=0.001,
        doc="Seconds from a request's first byte to the end of its headers.",
    )
    body_timeout: float = key(
        DEFAULT_BODY_TIMEOUT,
        name="body-timeout",
        ge=0.001,
        doc="Seconds to read (and decode) a request's body (else 408).",
    )
    idle_timeout: float = kw_only(
        key(
            DEFAULT_HTTP_IDLE_TIMEOUT,
            name="idle-timeout",
            ge=0,
            doc="Seconds a connection may wait for its next request; 0: never.",
        )
    )

    IGNORED = {
        **TLS_IGNORED,
        **dict.fromkeys(
            (
                "QueuedThreadPool.*",
                "HttpConfiguration.*",
                "SslContextFactory.*",
                "ServerConnector.*",
            ),
            "is a Jetty setting; flumed's HTTP server is not Jetty, so it is ignored",
        ),
    }

    @property
    def handler_name(self) -> str:
        """`handler = X`, or in a TOML table `[...handler]`, its `type = X`."""
        if "" in self.handler:
            return str(self.handler[""]).strip()
        return str(self.handler.get("type", DEFAULT_HANDLER)).strip()

    @property
    def handler_settings(self) -> dict[str, str]:
        drop = "" if "" in self.handler else "type"
        return {k: str(v) for k, v in self.handler.items() if k != drop}

    def check(self) -> list[str]:
        problems = self.tls_problems()
        name = self.handler_name
        cls = builtin_handler(name)
        if cls is not None:
            try:
                cls(self.handler_settings)
            except ValueError as e:
                problems.append(f"key 'handler': {e}")
        elif "." not in name and ":" not in name:
            problems.append(
                f"key 'handler': unknown handler {name!r}; use JSONHandler, "
                "BlobHandler or a Python class path (module:Class)"
            )
        else:
            problems.extend(_check_handler_class(name, self.handler_settings))
        return problems

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


def _check_handler_class(name: str, settings: dict[str, str]) -> list[str]:
    """A class-path handler is imported and built at validate as at start (config check)."""
    if name.lower().startswith("org.apache.flume."):
        return [
            f"key 'handler': Flume's {name} is not available in flumed; "
            "available handlers: JSONHandler, BlobHandler, or a Python class path"
        ]
    try:
        cls = import_from_string(name)
    except (ImportError, AttributeError, ValueError) as e:
        return [
            f"key 'handler': cannot import {name!r}: {e} (a handler is a Python class, "
            "module:Class; Java handler classes do not run in flumed)"
        ]
    if not callable(getattr(cls, "parse", None)):
        return [f"key 'handler': {name!r} has no parse(request) method"]
    try:
        cls(settings)
    except Exception as e:  # noqa: BLE001 - a third-party constructor may raise anything
        return [f"key 'handler': cannot build {name!r}: {e}"]
    return []


class HTTPSource(ListeningSource):
    """An aiohttp server; each request is parsed by the handler and committed as one batch.

    Accepted by flumed's own listener (flumed.sources.server: maxConnections, EMFILE) and
    guarded by flumed.http_server (idle-timeout, header-timeout); body-timeout is applied
    here around the handler.
    """

    Config = HTTPSourceConfig
    config: HTTPSourceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._runner: web.AppRunner | None = None
        self._guards: dict[Any, GuardedConnection] = {}
        self.handler: HTTPSourceHandler | None = None

    @property
    def header_timeout(self) -> float:
        return self.config.header_timeout

    @property
    def http_idle_timeout(self) -> float:
        return self.config.idle_timeout

    def _make_handler(self) -> HTTPSourceHandler:
        cfg = self.config
        name = cfg.handler_name
        cls = builtin_handler(name)
        try:
            if cls is None:
                cls = import_from_string(name)
            handler: HTTPSourceHandler = cls(cfg.handler_settings)
        except Exception as e:
            raise ComponentStartError(
                f"Source {self.name}: key 'handler': cannot build {name!r}: {e}"
            ) from e
        if not callable(getattr(handler, "parse", None)):
            raise ComponentStartError(
                f"Source {self.name}: key 'handler': {name!r} has no parse(request) method"
            )
        if isinstance(handler, JSONHandler):
            handler.max_events = cfg.maxEventsPerRequest
            handler.max_headers = cfg.maxHeadersPerEvent
        return handler

    async def start(self) -> None:
        cfg = self.config
        self.handler = self._make_handler()
        ctx = cfg.server_ssl(f"Source {self.name}")
        app = web.Application(
            client_max_size=cfg.maxRequestSize, middlewares=[guard_middleware(self)]
        )
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE)
        await runner.setup()
        try:
            assert runner.server is not None
            await self._listen(cfg.bind, [cfg.port], guarded_factory(self, runner.server), ctx)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info(
            "Source %s listening on %s://%s:%d/.",
            self.name,
            "https" if ctx else "http",
            cfg.bind,
            self.port,
        )
        await super().start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._close_listeners()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            # Lets requests in flight finish (up to STOP_GRACE s), then closes connections.
            with contextlib.suppress(Exception):
                await runner.cleanup()
        for g in list(self._connections):
            if g.transport is not None:
                g.transport.abort()
        await super().stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("TRACE", "OPTIONS"):
            return web.Response(status=403, text="Method not allowed.\n")
        counter = self.counter
        cfg = self.config
        assert self.handler is not None
        length = request.content_length
        try:
            if length is not None and length > cfg.maxRequestSize:
                # Refused from its headers: nothing of the body is read or waited for.
                raise HTTPTooLarge(
                    f"Content-Length {length} exceeds maxRequestSize {cfg.maxRequestSize}"
                )
            async with asyncio.timeout(cfg.body_timeout):
                events = await self.handler.parse(request)
            if len(events) > cfg.maxEventsPerRequest:
                raise HTTPTooLarge(
                    f"request of {len(events)} events exceeds maxEventsPerRequest "
                    f"{cfg.maxEventsPerRequest}"
                )
        except HTTPTooLarge as e:
            counter.EventReadFail += 1
            self._warn("Source %s: refused a request (413): %s", self.name, e, kind="limit")
            return _closing(web.Response(status=413, text=f"Request too large. {e}\n"))
        except HTTPBadRequest as e:
            counter.EventReadFail += 1
            self._warn("Source %s: bad request from %s: %s", self.name, request.remote, e)
            return web.Response(status=400, text=f"Bad request from client. {e}\n")
        except TimeoutError:
            counter.EventReadFail += 1
            counter.ConnectionTimedOutCount += 1
            self._warn(
                "Source %s: request from %s not read within body-timeout %gs (408).",
                self.name,
                request.remote,
                cfg.body_timeout,
                kind="timeout",
            )
            return _closing(web.Response(status=408, text="Request body too slow.\n"))
        except RecursionError:
            counter.EventReadFail += 1
            self._warn(
                "Source %s: bad request from %s: nested too deeply", self.name, request.remote
            )
            return web.Response(status=400, text="Bad request from client. Nested too deeply.\n")
        except Exception as e:  # noqa: BLE001 - answered 500 and logged
            # A custom handler's own failure: one line (rate-limited), no traceback flood.
            counter.EventReadFail += 1
            self._warn(
                "Source %s: handler failed on a request from %s: %r",
                self.name,
                request.remote,
                e,
                kind="handler",
            )
            return web.Response(status=500, text=f"Handler threw unexpected exception. {e}\n")
        n = len(events)
        counter.AppendBatchReceivedCount += 1
        counter.EventReceivedCount += n
        if n:
            try:
                await self.processor.process_batch(events)
            except ChannelFullError as e:
                counter.ChannelWriteFail += 1
                self._warn(
                    "Source %s: channel full, answered 503: %s", self.name, e, kind="channel"
                )
                return web.Response(
                    status=503,
                    headers={"Retry-After": "1"},
                    text=f"Error appending event to channel. Channel might be full. {e}\n",
                )
            except ChannelError as e:
                counter.ChannelWriteFail += 1
                self._warn(
                    "Source %s: channel error, answered 500: %s", self.name, e, kind="channel"
                )
                return web.Response(status=500, text=f"Error appending event to channel. {e}\n")
            except Exception as e:
                counter.GenericProcessingFail += 1
                log.exception("Source %s: unexpected error appending events.", self.name)
                return web.Response(status=500, text=f"Unexpected error. {e}\n")
        counter.AppendBatchAcceptedCount += 1
        counter.EventAcceptedCount += n
        return web.Response(status=200)


def _closing(resp: web.Response) -> web.Response:
    """An answer after which the connection closes (its body may be unread)."""
    resp.force_close()
    return resp
