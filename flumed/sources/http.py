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

import contextlib
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from flumed.config.keys import ignored, key, listen_claims, prefix
from flumed.errors import ChannelError, ChannelFullError, ComponentStartError
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.registry import import_from_string
from flumed.sources.base import Source
from flumed.tls import check_tls, start_server_context

log = logging.getLogger("flumed.sources.http")

DEFAULT_HANDLER = "org.apache.flume.source.http.JSONHandler"
#: How long `stop()` lets requests in flight finish.
STOP_GRACE = 5.0
MAX_BLOB_LENGTH = 100_000_000


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
        try:
            data = json.loads(text)
        except ValueError as e:
            raise HTTPBadRequest(f"Request has invalid JSON syntax: {e}") from None
        if not isinstance(data, list):
            raise HTTPBadRequest(
                'expected a JSON array of events [{"headers": {...}, "body": "..."}], '
                f"got a JSON {type(data).__name__}"
            )
        encode = _encoder(charset)
        events: list[Event] = []
        add = events.append
        for i, item in enumerate(data):
            if type(item) is not dict:
                raise HTTPBadRequest(f"event {i}: expected an object with headers and body")
            h = item.get("headers")
            b = item.get("body")
            if h is None:
                h = {}
            elif type(h) is not dict:
                raise HTTPBadRequest(f"event {i}: headers must be an object of strings")
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
class HTTPSourceConfig:
    port: int = key(ge=0, le=65535)
    bind: str = key("0.0.0.0")
    # `handler` and `handler.*` in one family: "" is the handler itself (see handler_name).
    handler: dict[str, Any] = prefix(
        "handler", doc="JSONHandler | BlobHandler | a Python class path; handler.* settings"
    )
    maxRequestSize: int = key(16 * 1024 * 1024, ge=1, doc="Longest body in bytes (else 413).")
    ssl: bool = key(False, aliases=("enableSSL",))
    certificate: str | None = key(None, doc="PEM certificate (chain) file, with ssl.")
    key_file: str | None = key(None, name="key", doc="PEM private key file, with ssl.")
    key_password: str | None = key(None, name="key-password")
    keystore: str | None = key(None, doc="Refused: Java keystores are not read.")
    exclude_protocols: list[str] = key(
        ["SSLv3"], name="exclude-protocols", aliases=("excludeProtocols",)
    )
    include_protocols: list[str] = key([], name="include-protocols")
    jetty_pool: dict[str, Any] = prefix("QueuedThreadPool")
    jetty_http: dict[str, Any] = prefix("HttpConfiguration")
    jetty_ssl: dict[str, Any] = prefix("SslContextFactory")
    jetty_connector: dict[str, Any] = prefix("ServerConnector")

    IGNORED = ignored(
        "keystore-password",
        "keystorePassword",
        "keystore-type",
        "exclude-cipher-suites",
        "include-cipher-suites",
    )

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
        problems = check_tls(
            self.ssl, self.certificate, self.keystore, self.include_protocols,
            self.exclude_protocols,
        )  # fmt: skip
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
        return problems

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


class HTTPSource(Source):
    """An aiohttp server; each request is parsed by the handler and committed as one batch."""

    Config = HTTPSourceConfig
    config: HTTPSourceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._runner: web.AppRunner | None = None
        self._warn = RateLimitedLog(log)
        self.handler: HTTPSourceHandler | None = None
        self.port = 0
        for p in ("jetty_pool", "jetty_http", "jetty_ssl", "jetty_connector"):
            for k in getattr(config, p):
                log.warning("Source %s: Jetty key %r has no meaning in flumed; ignored.", name, k)

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
        return handler

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not cfg.ssl:
            return None
        assert cfg.certificate is not None
        return start_server_context(
            f"Source {self.name}",
            cfg.certificate,
            cfg.key_file,
            cfg.key_password,
            cfg.include_protocols,
            cfg.exclude_protocols,
        )

    async def start(self) -> None:
        cfg = self.config
        self.handler = self._make_handler()
        ctx = self._ssl_context()
        app = web.Application(client_max_size=cfg.maxRequestSize)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, cfg.bind, cfg.port, ssl_context=ctx, reuse_address=True, backlog=1024
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info(
            "Source %s listening on %s://%s:%d/.",
            self.name,
            "https" if ctx else "http",
            cfg.bind,
            self.port,
        )
        await super().start()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            # Stops accepting, lets requests in flight finish (up to STOP_GRACE s).
            with contextlib.suppress(Exception):
                await runner.cleanup()
        await super().stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("TRACE", "OPTIONS"):
            return web.Response(status=403, text="Method not allowed.\n")
        counter = self.counter
        assert self.handler is not None
        try:
            events = await self.handler.parse(request)
        except HTTPTooLarge as e:
            counter.EventReadFail += 1
            self._warn.warn("Source %s: refused a request (413): %s", self.name, e)
            return web.Response(status=413, text=f"Request too large. {e}\n")
        except HTTPBadRequest as e:
            counter.EventReadFail += 1
            self._warn.warn("Source %s: bad request from %s: %s", self.name, request.remote, e)
            return web.Response(status=400, text=f"Bad request from client. {e}\n")
        except Exception as e:
            counter.EventReadFail += 1
            log.exception("Source %s: handler failed on a request.", self.name)
            return web.Response(status=500, text=f"Handler threw unexpected exception. {e}\n")
        n = len(events)
        counter.AppendBatchReceivedCount += 1
        counter.EventReceivedCount += n
        if n:
            try:
                await self.processor.process_batch(events)
            except ChannelFullError as e:
                counter.ChannelWriteFail += 1
                self._warn.warn("Source %s: channel full, answered 503: %s", self.name, e)
                return web.Response(
                    status=503,
                    headers={"Retry-After": "1"},
                    text=f"Error appending event to channel. Channel might be full. {e}\n",
                )
            except ChannelError as e:
                counter.ChannelWriteFail += 1
                self._warn.warn("Source %s: channel error, answered 500: %s", self.name, e)
                return web.Response(status=500, text=f"Error appending event to channel. {e}\n")
            except Exception as e:
                counter.GenericProcessingFail += 1
                log.exception("Source %s: unexpected error appending events.", self.name)
                return web.Response(status=500, text=f"Unexpected error. {e}\n")
        counter.AppendBatchAcceptedCount += 1
        counter.EventAcceptedCount += n
        return web.Response(status=200)
