"""exec against real child processes, in-process with a memory channel."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.event import Event
from flumed.sources.exec import ExecSource
from tests.support.harness import SourceHarness, on_uvloop
from tests.util import wait_until


def gone(pid: int) -> bool:
    """True when `pid` no longer exists (reaped), not even as a zombie."""
    try:
        psutil.Process(pid)  # a zombie still exists
    except psutil.NoSuchProcess:
        return True
    return False


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@on_uvloop
async def test_tail_F_follows_appends_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a1\na2\r\na3\n")
    cfg = {"command": f"tail -n +1 -F {log}", "batchTimeout": 50, "batchSize": 100}
    async with SourceHarness(ExecSource, cfg) as h:
        assert [e.body for e in await h.events(3)] == [b"a1", b"a2", b"a3"]
        with open(log, "ab") as f:
            f.write(b"b1\nb2\n")
        assert [e.body for e in await h.events(2)] == [b"b1", b"b2"]
        log.rename(tmp_path / "app.log.1")
        log.write_bytes(b"c1\n")
        assert [e.body for e in await h.events(1)] == [b"c1"]
        proc = h.source.proc
        assert proc is not None
        pid = proc.pid
    assert proc.returncode is not None
    assert gone(pid) and group_gone(pid)


@on_uvloop
async def test_exiting_command_is_restarted_after_throttle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "flumed.sources.exec")
    cfg = {
        "command": "echo run; echo oops >&2",
        "shell": "/bin/sh -c",
        "restart": "true",
        "restartThrottle": 100,
        "logStdErr": True,
        "batchTimeout": 50,
    }
    async with SourceHarness(ExecSource, cfg) as h:
        events = await h.events(3)
        assert h.source.runs >= 3
    assert [e.body for e in events] == [b"run"] * 3
    msgs = [r.getMessage() for r in caplog.records]
    assert "Source r1: stderr: oops" in msgs
    assert any("restarting the command in 100 ms" in m for m in msgs)


@on_uvloop
async def test_no_restart_runs_once_and_last_line_without_newline(tmp_path: Path) -> None:
    cfg = {"command": "printf 'x\\ny\\nlast'", "shell": "/bin/sh -c"}
    async with SourceHarness(ExecSource, cfg) as h:
        events = await h.events(3)
        await wait_until(lambda: h.source.proc is not None and h.source.proc.returncode == 0)
        assert h.source.runs == 1
    assert [e.body for e in events] == [b"x", b"y", b"last"]


CHILD = """
import sys
import time
n = int(sys.argv[1])
out = sys.stdout.buffer
for i in range(n):
    out.write(b"%08d %s\\n" % (i, b"p" * 50))
out.flush()
open(sys.argv[2], "w").close()
"""


@on_uvloop
async def test_full_channel_stalls_the_child_and_nothing_is_lost(tmp_path: Path) -> None:
    n = 10_000  # 600 kB: far more than the pipe and the reader's buffer hold
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = tmp_path / "done"
    cfg = {"command": f"{sys.executable} {script} {n} {done}", "batchSize": 50}
    h = SourceHarness(ExecSource, cfg, capacity=100, transaction_capacity=50, keep_alive=0.01)
    async with h:
        await wait_until(lambda: h.source.counter.ChannelWriteFail >= 5, what="channel full")
        # The source has been refused several times: the child is blocked in write().
        assert not done.exists()
        assert h.source.proc is not None and h.source.proc.returncode is None
        # Now drain; a longer keep-alive lets puts wait for room instead of backing off.
        h.channel.config = dataclasses.replace(h.channel.config, keep_alive=5.0)
        got: list[Event] = []
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            got += await h.take(50, 1.0)
        await wait_until(done.exists, what="child finished")
        assert h.source.counter.EventAcceptedCount == n
    assert [int(e.body[:8]) for e in got] == list(range(n))


@on_uvloop
async def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    cmd = f"trap '' TERM; echo up; touch {ready}; while :; do sleep 0.05; done"
    h = SourceHarness(ExecSource, {"command": cmd, "shell": "/bin/sh -c", "batchTimeout": 20})
    async with h:
        h.source.STOP_GRACE = 0.3
        await h.events(1)
        await wait_until(ready.exists)
        proc = h.source.proc
        assert proc is not None
    assert proc.returncode == -9
    assert gone(proc.pid)  # our child is reaped
    # Its own children (the loop's `sleep`) died with the group; init reaps them.
    await wait_until(lambda: group_gone(proc.pid), what="process group gone")


@on_uvloop
async def test_missing_command_is_counted_and_retried(tmp_path: Path) -> None:
    cfg = {"command": str(tmp_path / "no-such-cmd"), "restart": True, "restartThrottle": 20}
    async with SourceHarness(ExecSource, cfg) as h:
        await wait_until(lambda: h.source.counter.GenericProcessingFail >= 2)


@on_uvloop
async def test_undecodable_output_is_replaced(tmp_path: Path) -> None:
    cfg = {"command": "printf 'ok\\nb\\377d\\n'", "shell": "/bin/sh -c"}
    async with SourceHarness(ExecSource, cfg) as h:
        events = await h.events(2)
    assert [e.body for e in events] == [b"ok", "b\ufffdd".encode()]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"command": " "}, "command"),
        ({"charset": "nope"}, "charset"),
        ({"charset": "UTF-16"}, "ASCII-compatible"),
        ({"restartThrottle": -1}, "restartThrottle"),
        ({"batchSize": 0}, "batchSize"),
        ({"restart": "maybe"}, "restart"),
        ({"bogus": 1}, "unknown key 'bogus'"),
    ],
)
def test_config_errors_name_the_key(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(ExecSource.Config, {"command": "true", **extra}, "sources.r1")
    assert needle in str(ei.value)
