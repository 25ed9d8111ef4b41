"""Run every benchmark module (`python -m tests.bench [name ...]`).

Each module `tests/bench/bench_*.py` defines `main() -> None`, which prints lines of
the form `<pipeline>: <events/s> events/s, <MB/s> MB/s`. A module may be picked by
name: `python -m tests.bench core file_channel`.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = platform.python_version()
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {py}"


def main() -> None:
    here = Path(__file__).parent
    wanted = set(sys.argv[1:])
    print(f"machine: {machine()}", flush=True)
    for path in sorted(here.glob("bench_*.py")):
        name = path.stem[len("bench_") :]
        if wanted and name not in wanted:
            continue
        print(f"== {name}", flush=True)
        mod = importlib.import_module(f"tests.bench.{path.stem}")
        mod.main()


if __name__ == "__main__":
    main()
