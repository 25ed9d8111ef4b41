"""spooldir and exec inside real agent processes: restarts mid-file, the child reaped on stop."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil

from flumed.sources.spooldir import TRACKER_FILE
from tests.util import wait_until_sync

RECORD = "tests.support.record_sink:RecordSink"
LINE = len(b"line-000000\n")


def spool_conf(spool: Path, out: Path, delay: float) -> str:
    return f"""
[agents.a1.sources.r1]
type = "spooldir"
spoolDir = "{spool}"
batchSize = 50
channels = ["c1"]

[agents.a1.channels.c1]
type = "memory"
capacity = 200
transactionCapacity = 100

[agents.a1.sinks.k1]
type = "{RECORD}"
channel = "c1"
path = "{out}"
batchSize = 50
delay = {delay}
"""


def recorded(out: Path) -> list[bytes]:
    return out.read_bytes().splitlines() if out.exists() else []


def expected(n: int) -> list[bytes]:
    return [b"line-%06d" % i for i in range(n)]


def test_sigterm_mid_file_then_restart_delivers_every_line_once(agent_factory, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    n = 5000
    (spool / "data.log").write_bytes(b"".join(b"line-%06d\n" % i for i in range(n)))
    out = tmp_path / "out.txt"
    # A slow sink holds the source mid-file; SIGTERM stops it there and drains the channel.
    agent = agent_factory(spool_conf(spool, out, delay=0.02))
    wait_until_sync(lambda: len(recorded(out)) >= 500, what="some lines recorded")
    assert agent.terminate() == 0
    first = recorded(out)
    assert 500 <= len(first) < n
    assert (spool / "data.log").exists()
    rec = json.loads((spool / ".flumespool" / TRACKER_FILE).read_text())
    assert rec["pos"] == len(first) * LINE  # the channel was drained on stop
    again = agent_factory(spool_conf(spool, out, delay=0.0))
    wait_until_sync(lambda: (spool / "data.log.COMPLETED").exists(), what="file retired")
    wait_until_sync(lambda: len(recorded(out)) >= n, what="all lines")
    assert recorded(out) == expected(n)
    assert "resuming" in again.log()
    assert again.counter("SOURCE.r1", "EventAcceptedCount") == n - len(first)


def test_sigkill_mid_file_resumes_at_the_last_committed_batch(agent_factory, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    n = 5000
    (spool / "data.log").write_bytes(b"".join(b"line-%06d\n" % i for i in range(n)))
    out = tmp_path / "out.txt"
    agent = agent_factory(spool_conf(spool, out, delay=0.02))
    wait_until_sync(lambda: len(recorded(out)) >= 500, what="some lines recorded")
    agent.kill()
    # The memory channel's content died with the process (use a durable channel to keep
    # it); the tracker holds the end of the last batch committed to the channel.
    rec = json.loads((spool / ".flumespool" / TRACKER_FILE).read_text())
    pos = rec["pos"]
    assert pos % LINE == 0 and len(recorded(out)) * LINE <= pos < n * LINE
    done = len(recorded(out))
    agent_factory(spool_conf(spool, out, delay=0.0))
    wait_until_sync(lambda: (spool / "data.log.COMPLETED").exists(), what="file retired")
    wait_until_sync(lambda: len(recorded(out)) >= done + n - pos // LINE, what="the rest")
    assert recorded(out)[done:] == expected(n)[pos // LINE :]


def exec_conf(log: Path, out: Path) -> str:
    return f"""
[agents.a1.sources.r1]
type = "exec"
command = "tail -n +1 -F {log}"
batchTimeout = 50
channels = ["c1"]

[agents.a1.channels.c1]
type = "memory"
capacity = 1000
transactionCapacity = 100

[agents.a1.sinks.k1]
type = "{RECORD}"
channel = "c1"
path = "{out}"
"""


def test_exec_tail_in_an_agent_and_the_child_is_reaped_on_sigterm(agent_factory, tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line-%06d\n" % i for i in range(100)))
    out = tmp_path / "out.txt"
    agent = agent_factory(exec_conf(log, out))
    wait_until_sync(lambda: len(recorded(out)) >= 100, what="first lines")
    with open(log, "ab") as f:
        f.write(b"".join(b"line-%06d\n" % i for i in range(100, 300)))
    wait_until_sync(lambda: len(recorded(out)) >= 300, what="appended lines")
    assert recorded(out) == expected(300)
    assert agent.proc is not None
    children = psutil.Process(agent.proc.pid).children()
    tails = [c for c in children if c.name() == "tail"]
    assert len(tails) == 1
    assert agent.terminate() == 0
    assert not psutil.pid_exists(tails[0].pid)


def test_exec_restarted_command_in_an_agent(agent_factory, tmp_path):
    out = tmp_path / "out.txt"
    counter = tmp_path / "runs"
    script = tmp_path / "once.py"
    # Each run prints its run number and exits.
    script.write_text(
        "import sys\n"
        f"p = {str(counter)!r}\n"
        "try:\n    n = int(open(p).read())\nexcept OSError:\n    n = 0\n"
        "open(p, 'w').write(str(n + 1))\nprint('run-%d' % n)\n"
    )
    conf = exec_conf(tmp_path / "unused", out).replace(
        f'command = "tail -n +1 -F {tmp_path / "unused"}"',
        f'command = "{sys.executable} {script}"\nrestart = true\nrestartThrottle = 100',
    )
    agent = agent_factory(conf)
    wait_until_sync(lambda: len(recorded(out)) >= 4, what="four runs")
    assert agent.terminate() == 0
    lines = recorded(out)
    assert lines[:4] == [b"run-0", b"run-1", b"run-2", b"run-3"]
    assert os.path.exists(counter)
