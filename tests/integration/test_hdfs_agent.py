"""Sink hdfs in real agent processes: netcat (ack-every-event) -> file channel -> hdfs
(local DataStream, hourly buckets), SIGKILL at random moments of 100,000 numbered events:
none lost, duplicates bounded by one sink batch per kill (plus what the client resent),
no partial line, and every in-use file of a killed run finished by the next start."""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_file_channel_agent import Sender, drained
from tests.util import AgentProcess, free_port, wait_until

SINK_BATCH = 1000
WINDOW = 1000


def conf(port: int, data: Path, out: Path) -> str:
    return f"""
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

[agents.a1.sinks.k1]
type = "hdfs"
channel = "c1"
hdfs.path = "{out}/%Y-%m-%d/%H"
hdfs.useLocalTimeStamp = true
hdfs.fileType = "DataStream"
hdfs.batchSize = {SINK_BATCH}
hdfs.rollCount = 0
hdfs.rollSize = 300000
hdfs.rollInterval = 2
"""


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing(agent_factory, tmp_path: Path):
    total, kills = 100_000, 4
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    port = free_port()
    out = tmp_path / "out"
    agent: AgentProcess = agent_factory(conf(port, tmp_path / "data", out))
    up = asyncio.Event()
    up.set()
    sender = Sender(port, total, up, window=WINDOW)
    task = asyncio.create_task(sender.run())
    for k in range(kills):
        mark = int(total * (k + rng.uniform(0.3, 0.9)) / (kills + 1))
        await wait_until(lambda m=mark: sender.acked >= m or task.done(), 120, f"{mark} acks")
        await asyncio.sleep(rng.uniform(0, 0.05))
        assert not task.done(), f"run ended before kill {k + 1} (seed {seed})"
        up.clear()
        agent.kill()
        await asyncio.to_thread(agent.start)
        up.set()
    await asyncio.wait_for(task, 180)
    await wait_until(lambda: drained(agent), 120, "the channel to drain")
    assert agent.terminate() == 0
    paths = sorted(p for p in out.rglob("*") if p.is_file())
    assert paths and not [p for p in paths if p.name.endswith(".tmp")], paths
    assert all(re.fullmatch(r"FlumeData\.\d{13}", p.name) for p in paths)
    # The kills left in-use files; each restart finished them.
    assert "of a previous run" in agent.stderr_path.read_text()
    got: list[int] = []
    for p in paths:
        data = p.read_bytes()
        assert data.endswith(b"\n"), f"{p} ends in a partial line"
        got += [int(x) for x in data.split()]
    counts = Counter(got)
    missing = set(range(total)) - counts.keys()
    assert not missing, f"lost {len(missing)} events, e.g. {sorted(missing)[:5]} (seed {seed})"
    assert counts.keys() == set(range(total))
    dups = len(got) - len(counts)
    assert dups <= sender.resent + kills * SINK_BATCH, (dups, sender.resent, seed)
    assert dups <= kills * (SINK_BATCH + WINDOW), (dups, seed)
