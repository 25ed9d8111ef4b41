"""The HTTP client pieces shared by the `http`, `elasticsearch` and `hbase` sinks.

- `HttpClientKeys`: the client keys every one of them reads (timeouts, TLS from a PEM CA
  file, basic auth, API key, gzip, the dead-letter file), declared once.
- `HttpClient`: one aiohttp session for a list of base URLs tried in turn: a connection
  error or a timeout moves to the next URL; when every URL failed it raises
  `DeliveryError` (the caller's take rolls back). HTTP answers, whatever their status,
  are returned as they are: what a status means is the sink's business.
- `DeadLetterFile`: appends one JSON line per set-aside document and fsyncs before the
  caller's take may commit.
- `event_record()`: an event as a JSON-able dict (the body as text, or base64 when it is
  not UTF-8), for dead-letter lines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flumed.config.keys import key, prefix
from flumed.counters import SinkCounter
from flumed.errors import ComponentStartError, DeliveryError
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.sinks.base import BatchSink
from flumed.tls import start_client_context

log = logging.getLogger("flumed.sinks.http")

__all__ = [
    "DeadLetterFile",
    "DeadLetterSinkCounter",
    "HttpClient",
    "HttpClientKeys",
    "Response",
    "event_record",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpClientKeys:
    """Client keys shared by the HTTP-speaking sinks (a mixin of their Config)."""

    connectTimeout: int = key(5000, ge=1, doc="Milliseconds to connect.")
    requestTimeout: int = key(
        5000, ge=1, doc="Milliseconds to wait for an answer once the request was sent."
    )
    username: str = key("", doc="User for HTTP basic auth.")
    password: str = key("", doc="Password for basic auth (prefer `passwordFile`).")
    passwordFile: str = key("", doc="File holding the basic-auth password.")
    apiKey: str = key("", doc="Sent as `Authorization: ApiKey <apiKey>` (Elasticsearch style).")
    caFile: str = key("", doc="PEM file of CA certificates trusted for https (else the system's).")
    trustAllCerts: bool = key(False, doc="Accept any server certificate (tests only).")
    compression: Literal["none", "gzip"] = key("none", doc="Compress request bodies.")
    deadLetter: dict[str, str] = prefix(
        "deadLetter",
        doc="`deadLetter.path`: file receiving set-aside documents, one JSON line each.",
    )

    def http_problems(self) -> list[str]:
        problems = []
        if self.apiKey and self.username:
            problems.append("set either 'apiKey' or 'username', not both")
        if (self.password or self.passwordFile) and not self.username:
            problems.append("'password'/'passwordFile' need 'username'")
        if self.password and self.passwordFile:
            problems.append("set either 'password' or 'passwordFile', not both")
        unknown = set(self.deadLetter) - {"path"}
        if unknown:
            problems.append(f"unknown key(s) deadLetter.{', deadLetter.'.join(sorted(unknown))}")
        return problems

    @property
    def dead_letter_path(self) -> str:
        return self.deadLetter.get("path", "")


class DeadLetterSinkCounter(SinkCounter):
    """Flume's sink counters plus what these sinks add: documents set aside (written to
    the dead-letter file, or only logged without one) and retried items/requests."""

    NAMES = (*SinkCounter.NAMES, "EventDeadLetterCount", "EventRetryCount")
    EventDeadLetterCount: int
    EventRetryCount: int


@dataclass(slots=True)
class Response:
    """One HTTP answer: status, body (decompressed), and the base URL that gave it."""

    status: int
    body: bytes
    base: str


class HttpClient:
    """POSTs (or PUTs) to the first base URL that answers; see the module docstring.

    `start()` builds the session (reads the password file and the CA file: raises
    ComponentStartError naming the file); `request()` is called by one sink task at a time;
    `close()` is idempotent.
    """

    def __init__(self, who: str, bases: list[str], keys: HttpClientKeys) -> None:
        self.who = who
        self.bases = [b.rstrip("/") for b in bases]
        self.keys = keys
        self._current = 0
        self._session: Any = None
        self._headers: dict[str, str] = {}

    async def start(self) -> None:
        import aiohttp

        k = self.keys
        if k.username:
            password = k.password
            if k.passwordFile:
                try:
                    text = await asyncio.to_thread(Path(k.passwordFile).read_text, "utf-8")
                    password = text.rstrip("\r\n")
                except OSError as e:
                    raise ComponentStartError(
                        f"{self.who}: cannot read passwordFile {k.passwordFile!r}: {e}"
                    ) from None
            token = base64.b64encode(f"{k.username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        elif k.apiKey:
            self._headers["Authorization"] = f"ApiKey {k.apiKey}"
        if k.compression == "gzip":
            self._headers["Accept-Encoding"] = "gzip"
        ctx: ssl.SSLContext | None = None
        if any(b.startswith("https:") for b in self.bases):
            ctx = start_client_context(self.who, k.caFile or None, k.trustAllCerts)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=k.connectTimeout / 1000, sock_read=k.requestTimeout / 1000
        )
        # A batch goes to one host at a time: a few connections suffice; limit_per_host
        # bounds what an agent can open against a cluster.
        connector = aiohttp.TCPConnector(ssl=ctx if ctx is not None else True, limit=16)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=True
        )

    @property
    def started(self) -> bool:
        return self._session is not None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request to the current base URL, moving to the next on a connection
        error or timeout, each URL tried at most once.

        Raises:
            DeliveryError: no URL answered (the message names each URL and its error).
        """
        import aiohttp

        if self._session is None:
            raise DeliveryError(f"{self.who}: the HTTP client is closed (sink stopping)")
        hdrs = {**self._headers, **(headers or {})}
        data = body
        if body is not None and self.keys.compression == "gzip":
            data = gzip.compress(body, compresslevel=1)
            hdrs["Content-Encoding"] = "gzip"
        errors = []
        n = len(self.bases)
        for i in range(n):
            base = self.bases[(self._current + i) % n]
            try:
                # No redirects: a sink posts where it was told to, and a 3xx is an answer.
                async with self._session.request(
                    method, base + path, data=data, headers=hdrs, allow_redirects=False
                ) as resp:
                    content = await _read_capped(resp)
                    self._current = (self._current + i) % n
                    return Response(resp.status, content, base)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                errors.append(f"{base}: {_describe(e)}")
        self._current = (self._current + 1) % n
        raise DeliveryError(f"{self.who}: no server answered: {'; '.join(errors)}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()


#: The largest answer read (a `_bulk` answer for 10,000 failed items is a few MB); a
#: server sending more is treated as not answering.
MAX_ANSWER = 64 * 1024 * 1024


class AnswerTooLarge(OSError):
    """The server's answer exceeded MAX_ANSWER bytes."""


async def _read_capped(resp: Any) -> bytes:
    out = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        out += chunk
        if len(out) > MAX_ANSWER:
            raise AnswerTooLarge(f"answer larger than {MAX_ANSWER} bytes")
    return bytes(out)


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


def event_record(event: Event) -> dict[str, Any]:
    """The event as JSON-able data: headers, and the body as text (or `body_base64`)."""
    try:
        return {"headers": event.headers, "body": event.body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"headers": event.headers, "body_base64": base64.b64encode(event.body).decode()}


class DeadLetterFile:
    """Appends set-aside documents to a file, one JSON object a line, fsynced.

    The sink calls `write()` inside its take transaction, before the commit: a document
    is in this file (on disk) or still in the channel, never neither. Without a path
    (`deadLetter.path` unset) the records are logged (rate limited by the caller) and
    only counted; `enabled` says which.

    Raises (from `open()`): ComponentStartError when the file cannot be opened.
    """

    def __init__(self, who: str, path: str, counter: DeadLetterSinkCounter) -> None:
        self.who = who
        self.path = path
        self.counter = counter
        self._fd: int | None = None
        self._warn = RateLimitedLog(log)

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def open(self) -> None:
        if not self.path:
            return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as e:
            raise ComponentStartError(
                f"{self.who}: cannot open deadLetter.path {self.path!r}: {e}"
            ) from None

    async def write(self, records: list[dict[str, Any]]) -> None:
        """Append and fsync `records` (each gets `time` and `sink`), count them and log
        (rate limited) the first one's `error`.

        Raises:
            DeliveryError: the file could not be written (the take rolls back).
        """
        if not records:
            return
        if self._fd is None:
            self.counter.EventDeadLetterCount += len(records)
            self._warn.warn(
                "%s: set aside %d document(s) (no deadLetter.path, not kept); first: %s",
                self.who,
                len(records),
                records[0].get("error"),
            )
            return
        self._warn.warn(
            "%s: set aside %d document(s) into %s; first: %s",
            self.who,
            len(records),
            self.path,
            records[0].get("error"),
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = "".join(
            json.dumps({"time": now, "sink": self.who, **r}, ensure_ascii=False) + "\n"
            for r in records
        ).encode()
        fd = self._fd
        try:
            await asyncio.to_thread(_append, fd, data)
        except OSError as e:
            raise DeliveryError(
                f"{self.who}: cannot write deadLetter.path {self.path!r}: {e}"
            ) from None
        self.counter.EventDeadLetterCount += len(records)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.fsync(fd)


class HttpClientSink(BatchSink):
    """Base of the sinks that write over HTTP (http, elasticsearch, hbase).

    The subclass sets `_client` and `_dead` in its constructor; `start()` opens the
    dead-letter file and the client (closing the file again when the client fails to
    start), `stop()` sets `_stopping` (ends retry waits) and closes both.
    """

    _client: HttpClient
    _dead: DeadLetterFile

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._dead.open()
        try:
            await self._client.start()
        except BaseException:
            self._dead.close()
            raise
        await super().start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._client.close()
        self._dead.close()
        await super().stop()
