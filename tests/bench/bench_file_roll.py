"""file_roll, its serializers, and interceptor chains.

`python -m tests.bench file_roll`. Prints:
- how long one write of a 100 KB batch takes by each way of writing from asyncio
  (why file_roll writes with run_in_executor on its own thread, not aiofiles);
- seq -> memory -> file_roll pipelines per serializer (in-process, uvloop);
- an interceptor chain over batches of 1000 events.
Figures are medians of 3 runs; events/s and MB/s of event bodies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiofiles

from flumed.config.keys import flatten, parse
from flumed.event import Event
from flumed.registry import resolve
from tests.bench import _harness

BATCH = (b"x" * 99 + b"\n") * 1000  # 100 KB
WRITES = 2000
PIPELINE_EVENTS = 300_000


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _write_paths(path: str) -> dict[str, float]:
    """Microseconds per 100 KB write, by way of writing."""
    loop = asyncio.get_running_loop()
    one = concurrent.futures.ThreadPoolExecutor(1)
    out: dict[str, float] = {}

    async def executor(ex: concurrent.futures.Executor | None) -> float:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        t = time.perf_counter()
        for _ in range(WRITES):
            await loop.run_in_executor(ex, _write_all, fd, BATCH)
        dt = time.perf_counter() - t
        os.close(fd)
        return dt

    async def with_aiofiles() -> float:
        async with aiofiles.open(path, "wb") as f:
            t = time.perf_counter()
            for _ in range(WRITES):
                await f.write(BATCH)
                await f.flush()
            return time.perf_counter() - t

    async def on_loop() -> float:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        t = time.perf_counter()
        for _ in range(WRITES):
            _write_all(fd, BATCH)
        dt = time.perf_counter() - t
        os.close(fd)
        return dt

    runs: dict[str, list[float]] = {}
    for _ in range(3):  # interleaved, as the machine is noisy
        for name, fn in [
            ("run_in_executor, own thread (file_roll)", lambda: executor(one)),
            ("run_in_executor, default pool", lambda: executor(None)),
            ("aiofiles write + flush", with_aiofiles),
            ("blocking write on the loop", on_loop),
        ]:
            runs.setdefault(name, []).append(await fn() / WRITES * 1e6)
    one.shutdown()
    for name, v in runs.items():
        out[name] = statistics.median(v)
    return out


def _doc(out: str, serializer: str) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {
                    "r1": {
                        "type": "seq",
                        "totalEvents": PIPELINE_EVENTS,
                        "batchSize": 1000,
                        "channels": ["c1"],
                    }
                },
                "channels": {
                    "c1": {"type": "memory", "capacity": 100_000, "transactionCapacity": 1000}
                },
                "sinks": {
                    "k1": {
                        "type": "file_roll",
                        "channel": "c1",
                        "sink": {"directory": out, "serializer": serializer, "batchSize": 1000},
                    }
                },
            }
        }
    }


async def _pipeline(serializer: str) -> tuple[float, int]:
    out = tempfile.mkdtemp(prefix="flumed-bench-")
    try:
        dt = await _harness.time_pipeline(_doc(out, serializer), PIPELINE_EVENTS)
        nbytes = sum(len(b"%d" % i) for i in range(PIPELINE_EVENTS))
        assert sum(p.stat().st_size for p in Path(out).iterdir()) > 0
        return dt, nbytes
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _interceptor_chain() -> float:
    chain = []
    for t, keys in [
        ("timestamp", {}),
        ("host", {}),
        ("static", {"key": "dc", "value": "eu"}),
        ("regex_extractor", {"regex": r"^(\w+) (\d+)", "serializers": {"s1": {"name": "w"}}}),
    ]:
        cls = resolve("interceptors", t)
        chain.append(cls("i", parse(cls.Config, flatten(keys), t)))
    n, rounds = 1000, 300
    body = b"word %d and the rest of a log line of about a hundred bytes ......................"
    batches = [[Event(body % i) for i in range(n)] for _ in range(rounds)]
    t = time.perf_counter()
    for batch in batches:
        for i in chain:
            batch = i.intercept(batch)
    return n * rounds / (time.perf_counter() - t)


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="flumed-bench-")
    try:
        for name, us in _harness.run(_write_paths(os.path.join(tmp, "w"))).items():
            print(f"write 100 KB batch, {name}: {us:.0f} us/batch", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for serializer in ("text", "header_and_text", "avro_event"):
        rates, mbs = [], []
        for _ in range(3):
            dt, nbytes = _harness.run(_pipeline(serializer))
            rates.append(PIPELINE_EVENTS / dt)
            mbs.append(nbytes / dt / 1e6)
        print(
            f"seq -> memory -> file_roll ({serializer}): "
            f"{statistics.median(rates):,.0f} events/s, {statistics.median(mbs):.1f} MB/s",
            flush=True,
        )
    rate = statistics.median(_interceptor_chain() for _ in range(3))
    print(f"interceptors timestamp+host+static+regex_extractor: {rate:,.0f} events/s", flush=True)


if __name__ == "__main__":
    main()
