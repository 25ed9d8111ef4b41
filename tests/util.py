"""Shared test helpers: free ports, waiting on conditions, real agent processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out on 127.0.0.1 (never a fixed one)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0, what: str = ""
) -> None:
    """Wait until `predicate()` is true, re-checking as the loop turns; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        r = predicate()
        if not isinstance(r, bool):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def wait_until_sync(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class AgentProcess:
    """A real `flumed agent` process, with readiness read from the systemd notify socket."""

    def __init__(
        self,
        conf: Path,
        name: str | None = "a1",
        metrics: bool = True,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
    ) -> None:
        """`wrap` is a command prefix, e.g. `["ip", "netns", "exec", NS]` (which execs, so
        the process signalled is the agent itself)."""
        self.conf = conf
        self.wrap = wrap or []
        self.name = name
        self.metrics_port = free_port() if metrics else None
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._sockdir = tempfile.mkdtemp(prefix="flumed-notify-")
        self.notify_path = os.path.join(self._sockdir, "notify")
        self._notify: socket.socket | None = None
        self.stderr_path = conf.parent / f"agent-{os.getpid()}-{id(self)}.log"
        self.notifications: list[str] = []

    def start(self, wait: bool = True, timeout: float = 30.0) -> AgentProcess:
        if self._notify is None:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(self.notify_path)
        self.notifications.clear()
        args = [*self.wrap, sys.executable, "-m", "flumed", "agent", "-f", str(self.conf)]
        if self.name:
            args += ["-n", self.name]
        if self.metrics_port:
            args += ["--metrics-port", str(self.metrics_port), "--metrics-bind", "127.0.0.1"]
        args += self.extra_args
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, **self.env)
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self._stderr, stderr=self._stderr, env=env)
        if wait:
            self.wait_notify("READY=1", timeout)
        return self

    def wait_notify(self, message: str, timeout: float = 30.0) -> None:
        """Block until the agent sends `message` over the notify socket."""
        assert self._notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while message not in self.notifications:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited with {self.proc.returncode} before {message}:\n{self.log()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"agent did not send {message} in {timeout}s:\n{self.log()}")
            self._notify.settimeout(min(remaining, 0.5))
            try:
                data = self._notify.recv(4096)
            except TimeoutError:
                continue
            self.notifications.extend(data.decode().split("\n"))

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def metrics(self) -> dict[str, dict[str, str]]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as r:
            return json.loads(r.read())

    def counter(self, component: str, name: str) -> int:
        return int(float(self.metrics()[component][name]))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._stderr.close()
        return rc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if hasattr(self, "_stderr"):
            self._stderr.close()


class AckingSender:
    """Sends numbered lines to a netcat source with ack-every-event, resending whatever
    was not acknowledged when the connection drops (the agent restarted or reloaded).

    Runs in a thread-free blocking style; call `send_range` from a worker thread or
    directly. `acked` counts acknowledged lines; `failed` counts FAILED answers (resent).
    """

    def __init__(self, port: int, window: int = 1000) -> None:
        self.port = port
        self.window = window
        self.acked = 0
        self.failed = 0
        self.reconnects = 0

    def _connect(self, deadline: float) -> socket.socket:
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                return s
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def send_range(self, start: int, stop: int, timeout: float = 120.0) -> None:
        """Deliver every number in [start, stop) with an `OK`, resending as needed."""
        deadline = time.monotonic() + timeout
        pending = list(range(start, stop))
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} lines never acknowledged")
            s = self._connect(deadline)
            unacked: list[int] = []  # sent on this connection, no answer yet
            refused: list[int] = []  # answered FAILED: to send again
            try:
                f = s.makefile("rb")
                while pending:
                    unacked, pending = pending[: self.window], pending[self.window :]
                    s.sendall(b"".join(b"%d\n" % n for n in unacked))
                    while unacked:
                        line = f.readline()
                        if not line:
                            raise ConnectionResetError("closed by the agent")
                        n = unacked.pop(0)
                        if line == b"OK\n":
                            self.acked += 1
                        else:
                            self.failed += 1
                            refused.append(n)
                    pending, refused = refused + pending, []
            except OSError:
                self.reconnects += 1
                pending = refused + unacked + pending
            finally:
                s.close()


def read_numbers(path: Path) -> list[int]:
    out: list[int] = []
    for p in sorted(path.parent.glob(path.name)) if "*" in path.name else [path]:
        if p.exists():
            out += [int(x) for x in p.read_bytes().split()]
    return out
