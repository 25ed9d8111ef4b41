"""`flumed top` (one table, and the live view quit with q under a terminal) and
`flumed tap` (samples of a channel's and a sink's events, filtered by header) against
real agent processes."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from flumed.event import Event
from flumed.tap import TapSubscriber
from tests.util import free_port

HTTP_AGENT = """
[agents.a1.sources.r1]
type = "http"
bind = "127.0.0.1"
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 100000
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
"""


class Poster:
    """POSTs JSON batches to the http source from a thread until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            batch = [
                {"headers": {"k": "a" if i % 2 else "b"}, "body": f"e{n + i}"} for i in range(20)
            ]
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/",
                data=json.dumps(batch).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                urllib.request.urlopen(req, timeout=10).read()
                self.sent += len(batch)
                n += len(batch)
            except (urllib.error.URLError, OSError):
                pass
            self.stop.wait(0.02)

    def __enter__(self) -> Poster:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _flumed(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumed", *args], capture_output=True, text=True, timeout=timeout
    )


def test_top_once_prints_rates_and_fill(agent_factory):
    port = free_port()
    agent = agent_factory(HTTP_AGENT.format(port=port))
    url = f"http://127.0.0.1:{agent.metrics_port}"
    with Poster(port):
        r = _flumed("top", "--once", "--interval", "1", url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:5] == ["AGENT", "COMPONENT", "KIND", "IN/s", "OUT/s"]
    by = {ln.split()[1]: ln.split() for ln in lines[1:]}
    assert set(by) == {"r1", "c1", "k1"}
    assert float(by["r1"][3].replace(",", "")) > 0, r.stdout
    assert by["c1"][5].endswith("%")


def test_top_once_exits_1_for_an_unreachable_agent():
    r = _flumed("top", "--once", "--interval", "0.1", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "unreachable" in r.stdout


def test_top_live_view_quits_on_q(agent_factory):
    agent = agent_factory(HTTP_AGENT.format(port=free_port()))
    pid, fd = pty.fork()
    if pid == 0:  # the child: flumed top on the pty
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "flumed",
                "top",
                "--interval",
                "0.2",
                f"http://127.0.0.1:{agent.metrics_port}",
            ],
        )
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"COMPONENT" not in seen:
            assert time.monotonic() < deadline, seen[-500:]
            if select.select([fd], [], [], 1)[0]:
                seen += os.read(fd, 65536)
        assert b"\x1b[H\x1b[2J" in seen  # refreshed in place
        os.write(fd, b"q")
        while True:
            assert time.monotonic() < deadline, "top did not quit on q"
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    os.read(fd, 65536)
                except OSError:
                    pass
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_tap_prints_filtered_samples_of_channel_and_sink(agent_factory):
    port = free_port()
    agent = agent_factory(HTTP_AGENT.format(port=port), extra_args=["--tap"])
    url = f"http://127.0.0.1:{agent.metrics_port}"
    with Poster(port) as poster:
        chan = _flumed("tap", "c1", "--url", url, "--limit", "5", "--header", "k=a", "--json")
        sink = _flumed("tap", "k1", "--url", url, "--limit", "3")
    assert chan.returncode == 0, chan.stderr
    items = [json.loads(ln) for ln in chan.stdout.splitlines()]
    assert len(items) == 5
    assert all(i["component"] == "c1" and i["headers"] == {"k": "a"} for i in items)
    assert all(i["body"].startswith("e") for i in items)
    assert sink.returncode == 0, sink.stderr
    assert len(sink.stdout.splitlines()) == 3
    assert all(ln.startswith("k1 {k=") for ln in sink.stdout.splitlines())
    # Tapping cost the data path nothing: every event posted reached the sink.
    deadline = time.monotonic() + 30
    while agent.counter("SINK.k1", "EventDrainSuccessCount") < poster.sent:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    unknown = _flumed("tap", "nope", "--url", url)
    assert unknown.returncode == 1 and "no channel or sink named 'nope'" in unknown.stderr


def test_tap_is_off_unless_enabled(agent_factory):
    agent = agent_factory(HTTP_AGENT.format(port=free_port()))
    r = _flumed("tap", "c1", "--url", f"http://127.0.0.1:{agent.metrics_port}", "--timeout", "5")
    assert r.returncode == 1 and "404" in r.stderr


def test_a_slow_tap_never_blocks_the_data_path():
    sub = TapSubscriber("c1", limit=10, match={})
    events = [Event(b"x%d" % i) for i in range(1000)]
    sub.offer(events)  # returns at once although nobody reads
    assert sub.queue.qsize() == 10
    sub.offer(events)
    assert sub.queue.qsize() == 10


@pytest.mark.parametrize("bad", ["k", "=v"])
def test_tap_rejects_malformed_header_filter(bad):
    r = _flumed("tap", "c1", "--header", bad)
    assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr
