"""http sink throughput in batch mode: seq -> memory -> http (ndjson, batch 1000).

`python -m tests.bench http_sink`. The agent runs in this process; the endpoint is the
test double of `tests.support.http_servers` in its own process (it reads each body and
answers 200), so the figure is the sink's cost: taking, encoding, posting.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from flumed.agent import Agent
from flumed.config.graph import build_agent
from tests.bench import _harness
from tests.util import free_port

EVENTS = 500_000
BATCH = 1000


@contextlib.contextmanager
def double(kind: str) -> Iterator[str]:
    """A test server process (`recorder` or `bulk`) on a free port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.http_servers", kind, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def seq_doc(sink: dict[str, Any], total: int, batch: int) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {
                    "r1": {"type": "seq", "totalEvents": total, "batchSize": batch,
                           "channels": ["c1"]}
                },
                "channels": {
                    "c1": {"type": "memory", "capacity": 100_000, "transactionCapacity": batch}
                },
                "sinks": {"k1": {"channel": "c1", "batchSize": batch, **sink}},
            }
        }
    }  # fmt: skip


async def run_agent(doc: dict, total: int) -> tuple[float, float]:
    """Start the agent, wait until the sink drained `total` events; (wall seconds, CPU
    seconds of this process) taken."""
    agent = Agent(build_agent(doc, "a1", "bench"))
    _harness.started()
    t0 = time.perf_counter()
    c0 = time.process_time()
    await agent.start()
    sink = agent.sinks["k1"]
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def check() -> None:
        if sink.counter.EventDrainSuccessCount >= total:
            done.set()
        else:
            loop.call_later(0.005, check)

    check()
    await done.wait()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    await agent.stop()
    return dt, cpu


def measure(label: str, sink: dict[str, Any], kind: str, nbytes_per_event: float) -> float:
    rates, cpu_rates = [], []
    with double(kind) as url:
        for _ in range(3):
            doc = seq_doc({**sink, **({"endpoint": url} if kind == "recorder" else
                                      {"hostNames": url})}, EVENTS, BATCH)  # fmt: skip
            wall, cpu = _harness.run(run_agent(doc, EVENTS))
            rates.append(EVENTS / wall)
            cpu_rates.append(EVENTS / cpu)
    rate = statistics.median(rates)
    print(
        f"{label}: {rate:,.0f} events/s, {rate * nbytes_per_event / 1e6:.1f} MB/s "
        f"(median of 3; {statistics.median(cpu_rates):,.0f} events per CPU-second of the "
        "agent's process, which other load on the machine changes little; wall-clock "
        "figures are noisy while other engineers share this machine)",
        flush=True,
    )
    return rate


def main() -> None:
    # Each seq event is `{"headers":{},"body":"123456"}` on the wire (~30 bytes).
    measure(
        "seq -> memory -> http (ndjson, batch 1000, server in its own process)",
        {"type": "http", "batch": {"format": "ndjson"}},
        "recorder",
        30,
    )


if __name__ == "__main__":
    main()
