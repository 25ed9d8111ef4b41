"""`flumed agent --workers N`: N processes run one agent's graph under one supervisor.

The supervisor (the process systemd or the shell started) builds no graph. It starts
the workers (`flumed agent` again, told their slot by the environment variable
`FLUMED_WORKER=i/N`), waits for each one's READY over a private notify socket, then
tells systemd READY itself; forwards SIGTERM/SIGINT (drain and stop) and SIGHUP
(reload) to every worker; restarts a worker that dies, with a capped backoff; and
serves `/metrics` (sums per component), `/metrics/workers` (each worker's counters)
and `/health` by asking the workers' own endpoints on private loopback ports.

A worker differs from a lone agent in three ways (docs/workers.md):
- every listening socket has SO_REUSEPORT (the event loop's own servers through
  `_ReusePort`; sources that bind their own sockets ask `sharing_ports()`), so the
  kernel spreads the connections (and UDP senders) of one port over the workers;
- sources that cannot be split (`SINGLE_WORKER_SOURCES`) run in worker 0 only;
- workers 1..N-1 keep their state apart: file channel directories (and those of
  spillablememory overflows) get `-worker<i>`, file_roll file names the prefix
  `worker<i>-`. Worker 0 uses the paths as configured,
  so an agent that grows from one process to several keeps its state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import ClientSession, ClientTimeout, web

from flumed import systemd
from flumed.config.graph import AgentSpec, ComponentSpec
from flumed.errors import ConfigError

log = logging.getLogger("flumed.workers")

#: Environment variable telling a worker process its slot: "index/count".
WORKER_ENV = "FLUMED_WORKER"
#: Sources that would read the same files or run the same command twice: worker 0 only.
SINGLE_WORKER_SOURCES = frozenset({"taildir", "spooldir", "exec", "seq", "stress"})
#: Restart backoff for a dead worker: doubles from the first value up to the second;
#: a worker that ran this long before dying starts again at the first value.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0
#: Seconds a worker may take to become ready.
START_TIMEOUT = 120.0


# -- inside a worker ------------------------------------------------------------------
def slot() -> tuple[int, int] | None:
    """(index, count) when this process is a worker, else None."""
    value = os.environ.get(WORKER_ENV, "")
    i, _, n = value.partition("/")
    if not (i.isdigit() and n.isdigit()):
        return None
    return int(i), int(n)


_Spec = TypeVar("_Spec", bound=ComponentSpec)


def _with_suffix(spec: _Spec, **changes: Any) -> _Spec:
    return dataclasses.replace(spec, config=dataclasses.replace(spec.config, **changes))


def _single(source: ComponentSpec) -> bool:
    """A source that runs in worker 0 only: it reads files or runs a command, or it
    subscribes to a JMS topic (every subscriber gets every message)."""
    if source.type in SINGLE_WORKER_SOURCES:
        return True
    return source.type == "jms" and getattr(source.config, "destinationType", "") == "TOPIC"


def for_worker(spec: AgentSpec, index: int) -> AgentSpec:
    """The graph worker `index` runs (see the module docstring)."""
    sources = {n: s for n, s in spec.sources.items() if index == 0 or not _single(s)}
    if index == 0:
        return dataclasses.replace(spec, sources=sources)
    tag = f"worker{index}"
    channels = dict(spec.channels)
    for name, c in spec.channels.items():
        if c.type in ("file", "spillablememory"):  # the latter's overflow is a file channel
            dirs = ",".join(f"{d.strip().rstrip('/')}-{tag}" for d in c.config.dataDirs.split(","))
            cp = c.config.checkpointDir.strip()
            channels[name] = _with_suffix(
                c,
                dataDirs=dirs if c.config.dataDirs.strip() else "",
                checkpointDir=f"{cp.rstrip('/')}-{tag}" if cp else "",
            )
    sinks = dict(spec.sinks)
    for name, k in spec.sinks.items():
        if k.type == "file_roll":
            sinks[name] = _with_suffix(k, filePrefix=f"{tag}-{k.config.filePrefix}")
    return dataclasses.replace(spec, sources=sources, channels=channels, sinks=sinks)


def this_process(spec: AgentSpec) -> AgentSpec:
    """`spec` as this process runs it: itself, or a worker's share of it."""
    s = slot()
    return spec if s is None else for_worker(spec, s[0])


def ready_message(metrics_port: int | None) -> str:
    """What the agent sends as READY: a worker adds its private metrics port."""
    if slot() is None or metrics_port is None:
        return "READY=1"
    return f"READY=1\nFLUMED_METRICS_PORT={metrics_port}"


class _ReusePort:
    """Event-loop mixin: listening sockets get SO_REUSEPORT (shared with the other
    workers). Sockets handed in ready-made (`sock=`) are left alone."""

    async def create_server(self, *args: Any, **kw: Any) -> Any:
        if kw.get("sock") is None:
            kw["reuse_port"] = True
        return await super().create_server(*args, **kw)  # type: ignore[misc]

    async def create_datagram_endpoint(self, *args: Any, **kw: Any) -> Any:
        local = kw.get("local_addr", args[1] if len(args) > 1 else None)
        if local is not None and kw.get("sock") is None:
            kw["reuse_port"] = True
        return await super().create_datagram_endpoint(*args, **kw)  # type: ignore[misc]


def sharing_ports() -> bool:
    """True in a worker: a source that binds its own socket sets SO_REUSEPORT."""
    return slot() is not None


def setup_worker() -> None:
    """In a worker: asyncio's loops become `_ReusePort` ones (uvloop when installed),
    and every log line names the worker."""
    s = slot()
    if s is None:
        return
    factory = logging.getLogRecordFactory()
    tag = f"worker {s[0]}: "

    def tagged(*args: Any, **kw: Any) -> logging.LogRecord:
        record = factory(*args, **kw)
        record.msg = f"{tag}{record.msg}"
        return record

    logging.setLogRecordFactory(tagged)
    base: type
    try:
        import uvloop

        base = uvloop.Loop
    except ImportError:
        base = asyncio.SelectorEventLoop
    loop_cls = type("WorkerLoop", (_ReusePort, base), {})

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return loop_cls()  # type: ignore[no-any-return]

    asyncio.set_event_loop_policy(Policy())


# -- the supervisor -------------------------------------------------------------------
def plan(args: argparse.Namespace, load: Callable[[str, str | None], AgentSpec]) -> tuple[int, str]:
    """(workers to run, agent name): `--workers`, else the agent's `workers` key. A
    worker never supervises; a configuration that does not load runs as one process,
    which reports its errors."""
    if slot() is not None:
        return 1, ""
    try:
        spec = load(args.file, args.name)
    except ConfigError:
        return 1, ""
    return (args.workers or spec.workers), spec.name


def sum_metrics(per_worker: list[dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """Flume's JSON metrics of several workers as one: counts and sizes summed per
    component, StartTime the earliest, StopTime the latest, fill percentage recomputed."""
    out: dict[str, dict[str, str]] = {}
    for m in per_worker:
        for comp, fields in m.items():
            acc = out.setdefault(comp, {})
            for k, v in fields.items():
                if k not in acc:
                    acc[k] = v
                    continue
                try:
                    a, b = float(acc[k]), float(v)
                except ValueError:
                    continue
                if k == "StartTime":
                    r = min(x for x in (a, b) if x) if (a or b) else 0.0
                elif k == "StopTime":
                    r = max(a, b)
                else:
                    r = a + b
                acc[k] = str(int(r)) if r == int(r) else str(r)
    for fields in out.values():
        if "ChannelFillPercentage" in fields and "ChannelCapacity" in fields:
            cap = float(fields["ChannelCapacity"])
            size = float(fields.get("ChannelSize", "0"))
            fields["ChannelFillPercentage"] = str(size * 100.0 / cap if cap else 0.0)
    return out


class _Worker:
    """One worker slot: its process (restarted as needed) and what it reported."""

    def __init__(self, index: int, notify_path: str) -> None:
        self.index = index
        self.notify_path = notify_path
        self.proc: asyncio.subprocess.Process | None = None
        self.metrics_port: int | None = None
        self.ready = asyncio.Event()
        self.restarts = 0


class Supervisor:
    """Runs and watches the workers of one agent; see the module docstring.

    `run()` returns the process exit code: 0 after a clean stop, 1 when the workers
    could not all start.
    """

    def __init__(self, args: argparse.Namespace, count: int, agent: str) -> None:
        self.args = args
        self.count = count
        self.agent = agent
        self.stop_event = asyncio.Event()
        self.workers: list[_Worker] = []
        self.failed_start = asyncio.Event()
        self._signals = 0
        self._socks: list[socket.socket] = []
        self._http: web.AppRunner | None = None
        self._session: ClientSession | None = None

    def _command(self) -> list[str]:
        a = self.args
        cmd = [sys.executable, "-m", "flumed", "agent", "-f", a.file, "-n", self.agent]
        cmd += ["--grace", str(a.grace), "--health-grace", str(a.health_grace)]
        cmd += ["--log-level", a.log_level, "--log-format", a.log_format]
        if a.metrics_port is not None:
            cmd += ["--metrics-port", "0", "--metrics-bind", "127.0.0.1"]
        return cmd

    def _env(self, w: _Worker) -> dict[str, str]:
        env = dict(os.environ, NOTIFY_SOCKET=w.notify_path)
        env[WORKER_ENV] = f"{w.index}/{self.count}"
        for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
            env.pop(k, None)
        return env

    # -- notifications from workers ----------------------------------------------------
    def _on_notify(self, w: _Worker, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data = sock.recv(4096)
                for line in data.decode(errors="replace").split("\n"):
                    if line.startswith("FLUMED_METRICS_PORT="):
                        w.metrics_port = int(line.split("=", 1)[1])
                    elif line == "READY=1":
                        w.ready.set()

    # -- signals -------------------------------------------------------------------------
    def _on_stop_signal(self, signame: str) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("Second %s: killing the workers.", signame)
            self._send_all(signal.SIGKILL)
            os._exit(1)
        log.info("Received %s: stopping %d workers gracefully.", signame, self.count)
        self.stop_event.set()

    def _send_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    def _on_hup(self) -> None:
        log.info("Received SIGHUP: each worker reloads %s.", self.args.file)
        self._send_all(signal.SIGHUP)

    # -- running -------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        tmp = tempfile.mkdtemp(prefix="flumed-workers-")
        try:
            return await self._run(loop, tmp)
        finally:
            for s in self._socks:
                loop.remove_reader(s.fileno())
                s.close()
            shutil.rmtree(tmp, ignore_errors=True)

    async def _run(self, loop: asyncio.AbstractEventLoop, tmp: str) -> int:
        for i in range(self.count):
            w = _Worker(i, os.path.join(tmp, f"notify-{i}"))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            s.bind(w.notify_path)
            s.setblocking(False)
            loop.add_reader(s.fileno(), self._on_notify, w, s)
            self._socks.append(s)
            self.workers.append(w)
        keepers = [
            asyncio.create_task(self._keep(w), name=f"worker-{w.index}") for w in self.workers
        ]
        tasks: list[asyncio.Task[Any]] = []
        try:
            if not await self._wait_all_ready():
                # Stopped while starting is a clean stop; a worker that failed is not.
                stopped = self.stop_event.is_set() and not self.failed_start.is_set()
                return 0 if stopped else 1
            if self.args.metrics_port is not None:
                try:
                    await self._serve_metrics()
                except OSError as e:
                    log.error("Metrics endpoint on port %s failed: %s", self.args.metrics_port, e)
                    return 1
            log.info("Agent %s running in %d workers.", self.agent, self.count)
            systemd.notify("READY=1")
            interval = systemd.watchdog_interval()
            if interval:
                tasks.append(asyncio.create_task(systemd.watchdog(interval, self.stop_event)))
            await self.stop_event.wait()
            systemd.notify("STOPPING=1")
            return 0
        finally:
            self.stop_event.set()
            self._send_all(signal.SIGTERM)
            clean = await self._wait_exits()
            for t in (*keepers, *tasks):
                t.cancel()
            for t in (*keepers, *tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if self._http is not None:
                await self._http.cleanup()
            if self._session is not None:
                await self._session.close()
            if not clean:
                log.error("Some workers did not stop cleanly.")

    async def _wait_all_ready(self) -> bool:
        """True once every worker sent READY; False if one failed first (or stop)."""
        waits = [asyncio.ensure_future(w.ready.wait()) for w in self.workers]
        fail = asyncio.ensure_future(self.failed_start.wait())
        stop = asyncio.ensure_future(self.stop_event.wait())
        try:
            async with asyncio.timeout(START_TIMEOUT):
                all_ready = asyncio.ensure_future(asyncio.gather(*waits))
                aws: set[asyncio.Future[Any]] = {all_ready, fail, stop}
                done, _ = await asyncio.wait(aws, return_when="FIRST_COMPLETED")
                if all_ready not in done:
                    all_ready.cancel()
                    return False
                return True
        except TimeoutError:
            log.error("Workers were not ready within %.0f s.", START_TIMEOUT)
            return False
        finally:
            for f in (*waits, fail, stop):
                f.cancel()

    async def _keep(self, w: _Worker) -> None:
        """Run worker `w` until stop; restart it when it dies, with a capped backoff."""
        backoff = BACKOFF_FIRST
        while not self.stop_event.is_set():
            w.ready.clear()
            w.metrics_port = None
            started = time.monotonic()
            w.proc = await asyncio.create_subprocess_exec(
                *self._command(), env=self._env(w), start_new_session=True
            )
            log.info("Worker %d started (pid %d).", w.index, w.proc.pid)
            rc = await w.proc.wait()
            if self.stop_event.is_set():
                return
            if not w.ready.is_set() and w.restarts == 0:
                log.error("Worker %d exited with %d before it was ready.", w.index, rc)
                self.failed_start.set()
                return
            ran = time.monotonic() - started
            if ran >= BACKOFF_RESET:
                backoff = BACKOFF_FIRST
            w.restarts += 1
            log.error(
                "Worker %d (pid %d) exited with %d after %.0f s; restarting in %.1f s.",
                w.index,
                w.proc.pid,
                rc,
                ran,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _wait_exits(self) -> bool:
        """Wait for every worker to exit (they drain for up to `grace`); kill the ones
        still running long after. True when all exited with 0."""
        procs = [w.proc for w in self.workers if w.proc is not None]
        try:
            async with asyncio.timeout(self.args.grace + 60):
                codes = await asyncio.gather(*(p.wait() for p in procs))
        except TimeoutError:
            log.error(
                "Workers still running %.0f s after SIGTERM: killing them.", self.args.grace + 60
            )
            self._send_all(signal.SIGKILL)
            codes = await asyncio.gather(*(p.wait() for p in procs))
        return all(c == 0 for c in codes)

    # -- metrics -------------------------------------------------------------------------
    async def _serve_metrics(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=10))
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/metrics/workers", self._metrics_workers)
        app.router.add_get("/health", self._health)
        app.router.add_get("/health/live", self._live)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(
            self._http, self.args.metrics_bind, self.args.metrics_port, reuse_address=True
        )
        await site.start()
        log.info("Metrics of all workers served on port %d.", self.args.metrics_port)

    async def _fetch(self, w: _Worker, path: str) -> tuple[int, Any]:
        """(HTTP status, JSON body) of a worker's endpoint; (0, None) when it is down."""
        if w.metrics_port is None or self._session is None:
            return 0, None
        try:
            async with self._session.get(f"http://127.0.0.1:{w.metrics_port}{path}") as r:
                return r.status, await r.json(content_type=None)
        except (OSError, TimeoutError, ValueError) as e:
            log.debug("Worker %d %s: %s", w.index, path, e)
            return 0, None

    async def _per_worker(self) -> list[dict[str, dict[str, str]] | None]:
        got = await asyncio.gather(*(self._fetch(w, "/metrics") for w in self.workers))
        return [body if status == 200 else None for status, body in got]

    async def _metrics(self, request: web.Request) -> web.Response:
        parts = await self._per_worker()
        body = sum_metrics([p for p in parts if p is not None])
        return web.json_response(body, dumps=_dumps)

    async def _metrics_workers(self, request: web.Request) -> web.Response:
        parts = await self._per_worker()
        body = {
            str(w.index): {
                "pid": w.proc.pid if w.proc else None,
                "restarts": w.restarts,
                "ready": w.ready.is_set(),
                "metrics": p,
            }
            for w, p in zip(self.workers, parts, strict=True)
        }
        return web.json_response(body, dumps=_dumps)

    async def _health(self, request: web.Request) -> web.Response:
        got = await asyncio.gather(*(self._fetch(w, "/health") for w in self.workers))
        body = {str(w.index): b for w, (_, b) in zip(self.workers, got, strict=True)}
        ok = all(status == 200 for status, _ in got)
        return web.json_response(body, status=200 if ok else 503, dumps=_dumps)

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def supervise(args: argparse.Namespace, count: int, agent: str) -> int:
    """Run the supervisor of `count` workers of `agent` (the process exit code)."""
    return asyncio.run(Supervisor(args, count, agent).run())
