"""http source throughput: JSON batches of 100 events into a real agent.

`python -m tests.bench http`. The agent (http → memory → null) runs as its own
process; this process posts prepared batches over keep-alive connections (aiohttp on
uvloop) and counts only 200 answers, each of which means a committed batch.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.bench import _harness

BATCH = 100
REQUESTS = 3000
CONCURRENCY = 8


def bodies(k: int) -> list[bytes]:
    """A few distinct JSON batches (the server parses each one in full)."""
    out = []
    for b in range(k):
        out.append(
            json.dumps(
                [
                    {
                        "headers": {"host": f"web{i % 8}", "seq": str(b * BATCH + i)},
                        "body": f"GET /index.html?id={b * BATCH + i} HTTP/1.1 200 5123 served",
                    }
                    for i in range(BATCH)
                ]
            ).encode()
        )
    return out


async def post_all(url: str, payloads: list[bytes]) -> tuple[float, int]:
    ok = 0
    todo = iter(range(REQUESTS))
    conn = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal ok
            for i in todo:
                data = payloads[i % len(payloads)]
                async with s.post(
                    url, data=data, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - t0, ok


def run_once(payloads: list[bytes]) -> tuple[float, int]:
    with _harness.agent_process('type = "http"\nbind = "127.0.0.1"', 1000) as (agent, port):
        elapsed, ok = _harness.run(post_all(f"http://127.0.0.1:{port}/", payloads))
        assert ok == REQUESTS, f"{REQUESTS - ok} requests not answered 200"
        assert agent.counter("SOURCE.r1", "EventAcceptedCount") == REQUESTS * BATCH
    return elapsed, ok


def main() -> None:
    payloads = bodies(16)
    size = sum(len(p) for p in payloads) / len(payloads)
    best = min(run_once(payloads)[0] for _ in range(3))
    events = REQUESTS * BATCH
    print(
        f"http JSON batches of {BATCH} ({CONCURRENCY} keep-alive connections) -> memory -> null: "
        f"{events / best:,.0f} events/s, {REQUESTS * size / best / 1e6:.1f} MB/s "
        f"(best of 3, {REQUESTS:,} requests)"
    )


if __name__ == "__main__":
    main()
