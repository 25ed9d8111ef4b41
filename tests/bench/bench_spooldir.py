"""spooldir -> memory -> null, and exec -> memory -> null, in-process on uvloop.

`python -m tests.bench spooldir`. Lines are 100 bytes (99 + newline); the spool
directory holds 4 files. Figures are medians of 3 runs; events/s and MB/s of bodies.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench import _harness

LINES = 1_000_000
FILES = 4
LINE = b"x" * 99 + b"\n"


def _doc(source: dict[str, Any], batch: int) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {"r1": {**source, "batchSize": batch, "channels": ["c1"]}},
                "channels": {
                    "c1": {"type": "memory", "capacity": 100_000, "transactionCapacity": batch}
                },
                "sinks": {"k1": {"type": "null", "channel": "c1", "batchSize": batch}},
            }
        }
    }


async def _run(source: dict[str, Any], batch: int) -> float:
    return await _harness.time_pipeline(_doc(source, batch), LINES)


async def _spooldir(batch: int) -> float:
    d = Path(tempfile.mkdtemp(prefix="flumed-bench-"))
    try:
        for i in range(FILES):
            (d / f"f{i}.log").write_bytes(LINE * (LINES // FILES))
        return await _run({"type": "spooldir", "spoolDir": str(d)}, batch)
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _exec(batch: int) -> float:
    d = Path(tempfile.mkdtemp(prefix="flumed-bench-"))
    try:
        f = d / "data"
        f.write_bytes(LINE * LINES)
        return await _run({"type": "exec", "command": f"cat {f}"}, batch)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    cases = [
        ("spooldir (batchSize 100) -> memory -> null", _spooldir, 100),
        ("spooldir (batchSize 1000) -> memory -> null", _spooldir, 1000),
        ("exec `cat` (batchSize 1000) -> memory -> null", _exec, 1000),
    ]
    for name, fn, batch in cases:
        times = [_harness.run(fn(batch)) for _ in range(3)]
        dt = statistics.median(times)
        rate = LINES / dt
        print(f"{name}: {rate:,.0f} events/s, {rate * 99 / 1e6:.1f} MB/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
