"""Source `exec`: runs a command and makes one event per line of its standard output.

Keys are Flume's ExecSource keys: `command`, `shell` (e.g. `/bin/sh -c`; without it
the command is split on whitespace, as Flume does), `restart`, `restartThrottle` (ms),
`logStdErr`, `batchSize`, `batchTimeout` (ms), `charset`.

How it works, in one task owned by the source:
- stdout is read in chunks, split once per chunk; bodies are the lines without their
  `\\n` (or `\\r\\n`), re-encoded in `charset` (undecodable bytes become U+FFFD, as
  Java's reader does). Full batches go to the channel at once; a partial batch goes
  after `batchTimeout`.
- When the channel refuses a batch, the source stops reading the pipe and offers the
  same batch again with a bounded backoff: the pipe fills and the child blocks in
  write(). No line is dropped.
- The child runs in its own process group. On stop it gets SIGTERM (the group), then
  SIGKILL after STOP_GRACE seconds, and is always reaped.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.sources.base import Source

log = logging.getLogger("flumed.sources.exec")

#: Bytes read from the pipe at once.
CHUNK = 1 << 16
#: A line with no newline within this many bytes is cut here, so memory stays bounded.
MAX_LINE = 16 << 20
#: Backoff cap (s) while the channel refuses a batch.
RETRY_BACKOFF_MAX = 1.0
#: stderr lines logged per second at most (logStdErr); the rest are counted.
STDERR_LINES_PER_SEC = 20


@dataclass(frozen=True, slots=True)
class ExecConfig:
    command: str = key(doc="The command to run.")
    shell: str = key("", doc="Shell invocation, e.g. '/bin/sh -c'; the command is its argument.")
    restart: bool = key(False, doc="Run the command again when it exits.")
    restartThrottle: int = key(10000, ge=0, doc="Milliseconds to wait before a restart.")
    logStdErr: bool = key(False)
    batchSize: int = key(20, ge=1)
    batchTimeout: int = key(3000, ge=1, doc="Milliseconds before a partial batch is sent.")
    charset: str = key("UTF-8")

    def check(self) -> list[str]:
        problems = []
        if not self.command.strip():
            problems.append("key 'command': must not be empty")
        try:
            ok = "a\n".encode(self.charset) == b"a\n"
        except LookupError:
            problems.append(f"key 'charset': unknown charset {self.charset!r}")
        else:
            if not ok:
                problems.append(f"key 'charset': {self.charset!r} is not ASCII-compatible")
        return problems


class ExecSource(Source):
    """Runs `command`; its stdout lines become events.

    `start()` launches the owned task (a command that cannot be started is logged and,
    with `restart`, tried again after restartThrottle); `stop()` terminates and reaps the
    child and awaits the task.
    """

    Config = ExecConfig
    config: ExecConfig

    #: Seconds between SIGTERM and SIGKILL of the child's process group on stop.
    STOP_GRACE = 5.0

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0
        self._last_warn = 0.0
        cs = codecs.lookup(config.charset).name
        self._utf8 = cs == "utf-8"
        self._charset = cs

    @property
    def argv(self) -> list[str]:
        cfg = self.config
        if cfg.shell.strip():
            return [*cfg.shell.split(), cfg.command]
        return cfg.command.split()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"source-{self.name}")
        log.info("Source %s running %s.", self.name, self.argv)
        await super().start()

    async def stop(self) -> None:
        self._stopping.set()
        self._signal(signal.SIGTERM)
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self.STOP_GRACE)
            if not done:
                log.warning(
                    "Source %s: command did not exit %.0f s after SIGTERM; sending SIGKILL.",
                    self.name,
                    self.STOP_GRACE,
                )
                self._signal(signal.SIGKILL)
                done, _ = await asyncio.wait({task}, timeout=self.STOP_GRACE)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.proc is not None and self.proc.returncode is None:
            self._signal(signal.SIGKILL)
            await self.proc.wait()  # reap: no zombie is left behind
        await super().stop()

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the child leads its own group (start_new_session)

    def _warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warn >= 1.0:
            self._last_warn = now
            log.warning(msg, *args)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        cfg = self.config
        while not self._stopping.is_set():
            await self._run_once()
            if not cfg.restart or self._stopping.is_set():
                break
            log.info("Source %s: restarting the command in %d ms.", self.name, cfg.restartThrottle)
            await self._sleep(cfg.restartThrottle / 1000)

    async def _run_once(self) -> None:
        """Run the command once; read its stdout to EOF; wait for it to exit."""
        cfg = self.config
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE if cfg.logStdErr else asyncio.subprocess.DEVNULL,
                start_new_session=True,
                limit=CHUNK,
            )
        except OSError as e:
            log.error("Source %s: cannot run %s: %s", self.name, self.argv, e)
            self.counter.GenericProcessingFail += 1
            return
        self.runs += 1
        proc = self.proc
        if self._stopping.is_set():
            self._signal(signal.SIGTERM)  # stop() came while the command was starting
        err_task = (
            asyncio.create_task(self._log_stderr(proc), name=f"source-{self.name}-stderr")
            if cfg.logStdErr
            else None
        )
        try:
            await self._read_stdout(proc)
        finally:
            if self._stopping.is_set():
                self._signal(signal.SIGTERM)
            rc = await proc.wait()
            if err_task is not None:
                await err_task
        log.info("Source %s: command %s exited with %d.", self.name, self.argv, rc)

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        stdout = proc.stdout
        cfg = self.config
        size = cfg.batchSize
        timeout = cfg.batchTimeout / 1000
        pending: list[bytes] = []
        rest = b""
        first_at = 0.0  # when the oldest pending line arrived
        while True:
            wait = None
            if pending:
                wait = max(0.0, first_at + timeout - time.monotonic())
            try:
                data = await asyncio.wait_for(stdout.read(CHUNK), wait)
            except TimeoutError:
                if not await self._deliver(pending):
                    return
                pending = []
                continue
            if not data:
                break
            if rest:
                data = rest + data
            lines = data.split(b"\n")
            rest = lines.pop()
            if len(rest) >= MAX_LINE:
                lines.append(rest)
                rest = b""
            if not lines:
                continue
            if not pending:
                first_at = time.monotonic()
            pending += self._bodies(lines)
            while len(pending) >= size:
                # Stalls here while the channel is full: nothing more is read.
                if not await self._deliver(pending[:size]):
                    return
                del pending[:size]
                first_at = time.monotonic()
        if rest:
            pending += self._bodies([rest])
        for i in range(0, len(pending), size):
            if not await self._deliver(pending[i : i + size]):
                return

    def _bodies(self, lines: list[bytes]) -> list[bytes]:
        """Strip `\\r` before `\\n`; make bodies valid in `charset` (U+FFFD for bad bytes)."""
        block = b"\n".join(lines)
        if b"\r" in block:
            lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
        try:
            block.decode(self._charset)
        except UnicodeDecodeError:
            self._warn(
                "Source %s: command output is not valid %s; bad bytes replaced by U+FFFD.",
                self.name,
                self._charset,
            )
            cs = self._charset
            return [ln.decode(cs, "replace").encode(cs, "replace") for ln in lines]
        return lines

    async def _deliver(self, bodies: list[bytes]) -> bool:
        """Commit one batch, retrying with backoff while the channel refuses it.

        Returns False when the source stops first; the refused lines are then reported.
        """
        events = [Event(b) for b in bodies]
        self.counter.EventReceivedCount += len(events)
        self.counter.AppendBatchReceivedCount += 1

        def refused(e: ChannelError, left: int) -> None:
            self._warn(
                "Source %s: channel refused %d lines; not reading the command's output "
                "until they fit: %s",
                self.name,
                left,
                e,
            )

        if await self.deliver(events, self._stopping, refused, max_backoff=RETRY_BACKOFF_MAX):
            return True
        log.error("Source %s: stopping with lines of output the channel did not take.", self.name)
        return False

    async def _log_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Log the child's stderr lines at INFO, at most STDERR_LINES_PER_SEC a second."""
        assert proc.stderr is not None
        window = 0.0
        logged = 0
        dropped = 0
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:  # a line longer than the stream limit: skip a chunk
                await proc.stderr.read(CHUNK)
                continue
            if not line:
                break
            now = time.monotonic()
            if now - window >= 1.0:
                if dropped:
                    log.info("Source %s: %d stderr lines not logged.", self.name, dropped)
                window, logged, dropped = now, 0, 0
            if logged < STDERR_LINES_PER_SEC:
                logged += 1
                text = line.rstrip(b"\r\n").decode(self._charset, "replace")
                log.info("Source %s: stderr: %s", self.name, text)
            else:
                dropped += 1
        if dropped:
            log.info("Source %s: %d stderr lines not logged.", self.name, dropped)
