"""Hostile network clients against a real `flumed agent` process (issue 9, network half).

Each test runs one attack on loopback, bounded in bytes and time, and checks: the agent's
resident memory (psutil, sampled while the attack runs) stays within the stated bound,
other clients are served meanwhile, and what was acknowledged was taken.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from tests.util import AgentProcess, free_port, wait_until_sync

MB = 1 << 20

SINK = """
[agents.a1.channels.c1]
type = "memory"
capacity = 200000
transactionCapacity = 200000
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
"""


class RssWatch:
    """Samples a process's resident memory in a thread until stopped; `peak` is the most seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    @property
    def growth(self) -> int:
        return self.peak - self.base

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def watching(agent: AgentProcess) -> Iterator[RssWatch]:
    assert agent.proc is not None
    with RssWatch(agent.proc.pid) as w:
        yield w


def netcat_lines(port: int, n: int) -> int:
    """Send `n` lines on a fresh connection; the number of `OK` answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"".join(b"good %d\n" % i for i in range(n)))
        got = b""
        while got.count(b"\n") < n:
            piece = s.recv(65536)
            if not piece:
                break
            got += piece
    return got.count(b"OK\n")


async def flood(port: int, data: bytes, total: int, stall: float = 5.0) -> tuple[int, object]:
    """Write `data` repeatedly up to `total` bytes, reading nothing, until the agent stops
    reading (a drain stalls for `stall` seconds). Returns the bytes sent and the open
    connection (reader, writer), left unread."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    while sent < total:
        w.write(data)
        try:
            await asyncio.wait_for(w.drain(), stall)
        except (TimeoutError, ConnectionError):
            break
        sent += len(data)
    return sent, (r, w)


def test_netcat_client_that_reads_no_answers_is_paused_then_closed(agent_factory) -> None:  # type: ignore[no-untyped-def]
    """9.1: empty lines, answers never read. Before: 16 MB sent grew the agent by ~1 GB."""
    port = free_port()
    agent = agent_factory(f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
frame-timeout = 3
channels = ["c1"]
{SINK}""")

    async def attack() -> tuple[int, int]:
        sent, (_r, w) = await flood(port, b"\n" * 65536, 16 * MB)
        # Another client is served while the flooder is paused.
        good = await asyncio.to_thread(netcat_lines, port, 1000)
        # The flooder is closed once it has left its answers unread for frame-timeout.
        await asyncio.to_thread(
            wait_until_sync,
            lambda: agent.counter("SOURCE.r1", "ConnectionTimedOutCount") >= 1,
            30,
            "the flooder closed",
        )
        w.close()
        return sent, good

    with watching(agent) as mem:
        sent, good = asyncio.run(attack())
    print(f"netcat flood: sent {sent / MB:.1f} MB, agent grew {mem.growth / MB:.1f} MB")
    assert good == 1000
    assert sent < 16 * MB  # it was pushed back, not read to the end
    assert mem.growth < 100 * MB, f"agent grew by {mem.growth / MB:.0f} MB"
    assert "left its answers unread" in agent.log()
