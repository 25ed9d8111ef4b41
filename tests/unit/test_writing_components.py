"""The worked example of docs/writing-components.md is the code of
tests/support/line_sink.py, and that sink works: a refused batch stays in the channel
and is sent again; a server that is down costs the channel nothing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from flumed.agent import Agent
from flumed.config.graph import build_agent
from tests.util import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
LINES = "tests.support.line_sink:LineSink"


def test_the_documented_sink_is_the_tested_one():
    doc = (ROOT / "docs" / "writing-components.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert (ROOT / "tests" / "support" / "line_sink.py").read_text() in blocks


def agent_doc(port: int, total: int) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {
                    "r": {"type": "seq", "totalEvents": total, "batchSize": 10, "channels": ["c"]}
                },
                "channels": {"c": {"type": "memory", "capacity": 1000}},
                "sinks": {
                    "k": {
                        "type": LINES,
                        "channel": "c",
                        "hostname": "127.0.0.1",
                        "port": port,
                        "batchSize": 10,
                    }
                },
            }
        }
    }


async def test_refused_batch_is_sent_again_and_nothing_is_lost():
    got: list[int] = []
    refusals = 1

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal refusals
        while True:
            chunk = await r.read(65536)
            if not chunk:
                w.close()
                return
            lines = chunk.split(b"\n")[:-1]
            if refusals:
                refusals -= 1
                w.write(b"NO\n")
            else:
                got.extend(int(x) for x in lines)
                w.write(b"OK\n")
            await w.drain()

    port = free_port()
    # Down at first: the sink takes nothing and counts the refused connections.
    agent = Agent(build_agent(agent_doc(port, 200), "a1", "t"))
    await agent.start()
    sink = agent.sinks["k"]
    try:
        await wait_until(lambda: sink.counter.ConnectionFailedCount >= 1, what="refused")
        assert sink.counter.EventDrainAttemptCount == 0
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        async with server:
            await wait_until(lambda: len(got) >= 200, what="200 events delivered")
            assert sorted(got) == list(range(200))
            assert sink.counter.EventDrainSuccessCount == 200
            assert sink.counter.EventDrainAttemptCount == 210  # the refused batch, again
    finally:
        await agent.stop()
