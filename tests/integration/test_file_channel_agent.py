"""The file channel in real processes: SIGKILL at random moments, a full disk, two agents
on one directory, a reload, a damaged database at start.

The agents run netcat (ack-every-event) -> file -> logger; the logger sink writes each
event it delivers to the agent's stderr log before its take commits, so the log is
what was delivered downstream. `Sender` plays a client that resends every line it has
no `OK` for (Flume's at-least-once contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter, deque
from pathlib import Path

import pytest

from tests.support.tmpfs import MakeTmpfs
from tests.util import AgentProcess, free_port, wait_until

SINK_BATCH = 1000
WINDOW = 1000


def conf(
    port: int,
    data: Path,
    *,
    sink: bool = True,
    channel_extra: str = "",
    min_space: int = 1 << 20,
) -> str:
    text = f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = true
max-line-length = 64
channels = ["c1"]

[agents.a1.channels.c1]
type = "file"
dataDirs = "{data}"
capacity = 1000000
transactionCapacity = 10000
minimumRequiredSpace = {min_space}
{channel_extra}
"""
    if sink:
        text += f"""
[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
batchSize = {SINK_BATCH}
maxBytesToLog = 64
"""
    return text


def delivered(agent: AgentProcess) -> list[int]:
    """The numbers the logger sink delivered, in order, across every run of `agent`."""
    out = []
    for line in agent.stderr_path.read_text(errors="replace").splitlines():
        if "flumed.sinks.logger: Event: {" in line and line.endswith(" }"):
            out.append(int(line.split()[-2]))
    return out


class Sender:
    """Sends the numbers 0..total-1 as lines to a netcat source with ack-every-event.

    Keeps up to `window` lines unanswered. A line answered `FAILED` is sent again after
    a short pause (the channel pushed back); on a dropped connection every unanswered
    line is sent again once `up` is set (the test sets it when the agent is back).
    """

    def __init__(self, port: int, total: int, up: asyncio.Event, window: int = WINDOW) -> None:
        self.port = port
        self.pending: deque[int] = deque(range(total))
        self.up = up
        self.window = window
        self.acked = 0
        self.failed = 0
        self.resent = 0
        self.drops = 0

    async def run(self) -> None:
        while self.pending:
            await self.up.wait()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.drops += 1
                self.up.clear()  # the agent went down between; the test sets it again
                continue
            inflight: deque[int] = deque()
            try:
                await self._session(reader, writer, inflight)
            except (OSError, asyncio.IncompleteReadError):
                self.drops += 1
                self.resent += len(inflight)
                self.pending.extendleft(reversed(inflight))
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inflight: deque[int]
    ) -> None:
        while self.pending or inflight:
            room = self.window - len(inflight)
            if room > 0 and self.pending:
                batch = [self.pending.popleft() for _ in range(min(room, len(self.pending)))]
                inflight.extend(batch)
                writer.write(b"".join(b"%d\n" % n for n in batch))
                await writer.drain()
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise ConnectionResetError("agent closed the connection")
            n = inflight.popleft()
            if line == b"OK\n":
                self.acked += 1
            else:
                self.failed += 1
                self.pending.appendleft(n)
                if not inflight:
                    await asyncio.sleep(0.05)  # back off before offering again


async def drained(agent: AgentProcess) -> bool:
    try:
        m = await asyncio.to_thread(agent.metrics)
    except OSError:
        return False
    return m["CHANNEL.c1"]["ChannelSize"] == "0"


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing(agent_factory, tmp_path: Path):
    total, kills = 100_000, 6
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    port = free_port()
    agent: AgentProcess = agent_factory(conf(port, tmp_path / "data"))
    up = asyncio.Event()
    up.set()
    sender = Sender(port, total, up)
    task = asyncio.create_task(sender.run())
    for k in range(kills):
        # A random point in the k-th slice of the run, then a random instant.
        mark = int(total * (k + rng.uniform(0.3, 0.9)) / (kills + 1))
        await wait_until(lambda m=mark: sender.acked >= m or task.done(), 120, f"{mark} acks")
        await asyncio.sleep(rng.uniform(0, 0.05))
        assert not task.done(), f"run ended before kill {k + 1} (seed {seed})"
        up.clear()
        agent.kill()
        await asyncio.to_thread(agent.start)
        up.set()
    await asyncio.wait_for(task, 120)
    await wait_until(lambda: drained(agent), 120, "the channel to drain")
    assert agent.terminate() == 0
    got = delivered(agent)
    counts = Counter(got)
    missing = set(range(total)) - counts.keys()
    dups = len(got) - len(counts)
    assert not missing, f"lost {len(missing)} events, e.g. {sorted(missing)[:5]} (seed {seed})"
    assert counts.keys() == set(range(total))
    # At most one batch per hop per kill: the sink's batch taken but not committed,
    # and the sender's window committed but not yet acknowledged.
    assert sender.drops >= kills
    assert dups <= sender.resent + kills * SINK_BATCH, (dups, sender.resent, seed)
    assert dups <= kills * (SINK_BATCH + WINDOW), (dups, seed)


def test_channel_process_killed_keeps_committed_and_taken_events(tmp_path: Path):
    """kill -9 a process holding a put staged, a take uncommitted: a restart has exactly
    the committed events, the taken-uncommitted ones included, in order."""
    script = f"""
import asyncio, sys
from flumed.channels.file import FileChannel, FileChannelConfig
from flumed.event import Event

async def main():
    ch = FileChannel("c1", FileChannelConfig(dataDirs={str(tmp_path)!r}, minimumRequiredSpace=0))
    await ch.start()
    for b in range(5):
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"%d" % i) for i in range(b * 10, b * 10 + 10)])
    async with ch.transaction() as tx:
        await tx.take_batch(7)
    taker = ch.transaction(); taker.begin()
    await taker.take_batch(15)
    putter = ch.transaction(); putter.begin()
    await putter.put_batch([Event(b"999")])
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "READY\n"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)

    async def check() -> list[bytes]:
        from flumed.channels.file import FileChannel, FileChannelConfig

        ch = FileChannel("c1", FileChannelConfig(dataDirs=str(tmp_path), minimumRequiredSpace=0))
        await ch.start()
        out: list[bytes] = []
        while True:
            async with ch.transaction() as tx:
                got = await tx.take_batch(100)
            if not got:
                break
            out += [e.body for e in got]
        await ch.stop()
        return out

    assert asyncio.run(check()) == [b"%d" % i for i in range(7, 50)]


async def test_second_agent_on_the_same_directory_refuses_to_start(agent_factory, tmp_path):
    data = tmp_path / "data"
    port1 = free_port()
    first = agent_factory(conf(port1, data))
    second = agent_factory(conf(free_port(), data), start=False)
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(30) == 1
    log = second.log()
    assert f"data directory {data} is in use by another flumed agent" in log
    assert f"pid {first.proc.pid}" in log
    # The first one is untouched and still serving.
    up = asyncio.Event()
    up.set()
    sender = Sender(port1, 100, up)
    await asyncio.wait_for(sender.run(), 60)
    await wait_until(lambda: drained(first), 60, "the channel to drain")
    assert first.terminate() == 0
    assert sorted(delivered(first)) == list(range(100))


@pytest.fixture
def tmpfs(make_tmpfs: MakeTmpfs) -> Path:
    """A 16 MB tmpfs (tests/support/tmpfs.py)."""
    return make_tmpfs("16m")


async def test_disk_short_of_space_pushes_back_then_resumes(agent_factory, tmpfs: Path):
    # minimumRequiredSpace (8 MB) above what the filler leaves free on a 16 MB disk.
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (10 << 20))
    port = free_port()
    agent = agent_factory(conf(port, tmpfs / "data", min_space=8 << 20))
    up = asyncio.Event()
    up.set()
    sender = Sender(port, 3000, up)
    task = asyncio.create_task(sender.run())
    await wait_until(lambda: sender.failed >= 3000, 60, "the source to push back")
    m = await asyncio.to_thread(agent.metrics)
    assert m["CHANNEL.c1"]["EventPutSuccessCount"] == "0"
    assert int(m["SOURCE.r1"]["ChannelWriteFail"]) >= 1
    assert sender.acked == 0 and not task.done()
    filler.unlink()  # space returns
    await asyncio.wait_for(task, 60)
    await wait_until(lambda: drained(agent), 60, "the channel to drain")
    assert agent.terminate() == 0
    assert sorted(delivered(agent)) == list(range(3000))  # each exactly once
    assert "below minimumRequiredSpace" in agent.stderr_path.read_text()


async def test_reload_restarts_the_channel_with_its_events(agent_factory, tmp_path: Path):
    port = free_port()
    data = tmp_path / "data"
    agent = agent_factory(conf(port, data, sink=False))
    up = asyncio.Event()
    up.set()
    await asyncio.wait_for(Sender(port, 500, up).run(), 60)
    assert agent.counter("CHANNEL.c1", "ChannelSize") == 500
    # New keys for c1 (it restarts: closes and reopens its database) and a sink.
    agent.conf.write_text(conf(port, data, channel_extra="keep-alive = 1"))
    agent.signal(signal.SIGHUP)
    await wait_until(lambda: len(delivered(agent)) >= 500, 20, "the events after reload")
    assert delivered(agent) == list(range(500))
    assert agent.terminate() == 0


def test_damaged_database_stops_the_start_then_recovers(agent_factory, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    db = data / "c1.db"
    db.write_bytes(os.urandom(8192))
    agent = agent_factory(conf(free_port(), data), start=False)
    agent.start(wait=False)
    assert agent.proc is not None
    assert agent.proc.wait(30) == 1
    log = agent.log()
    assert f"channel c1 failed to start: database {db} cannot be read" in log
    assert "flumed file-channel-recover" in log
    r = subprocess.run(
        [sys.executable, "-m", "flumed", "file-channel-recover", "--dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "recovered 0 events" in r.stdout
    agent.start()
    assert agent.counter("CHANNEL.c1", "ChannelSize") == 0
    assert agent.terminate() == 0
