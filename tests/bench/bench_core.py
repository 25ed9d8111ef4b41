"""Core pipelines: seq -> memory -> null (in-process) and netcat -> memory -> file_roll.

`python -m tests.bench core`. Figures are events/s and MB/s of event bodies.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import _harness

SEQ_EVENTS = 2_000_000
NETCAT_EVENTS = 2_000_000
LINE = 100


def _seq_doc(total: int, batch: int) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {
                    "r1": {
                        "type": "seq",
                        "totalEvents": total,
                        "batchSize": batch,
                        "channels": ["c1"],
                    }
                },
                "channels": {
                    "c1": {"type": "memory", "capacity": 100_000, "transactionCapacity": batch}
                },
                "sinks": {"k1": {"type": "null", "channel": "c1", "batchSize": batch}},
            }
        }
    }


async def _run_seq(total: int, batch: int) -> tuple[float, int]:
    dt = await _harness.time_pipeline(_seq_doc(total, batch), total)
    nbytes = sum(len(b"%d" % i) for i in range(0, total, 1))
    return dt, nbytes


def bench_seq() -> float:

    rates = []
    for _ in range(3):
        dt, nbytes = _harness.run(_run_seq(SEQ_EVENTS, 1000))
        rates.append(SEQ_EVENTS / dt)
    rate = statistics.median(rates)
    print(
        f"seq -> memory -> null (batch 1000, in-process, one core): {rate:,.0f} events/s, "
        f"{rate * nbytes / SEQ_EVENTS / 1e6:.1f} MB/s",
        flush=True,
    )
    return rate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_netcat_file_roll() -> None:
    """A real agent process; one TCP connection of 100-byte lines, no acks."""
    try:
        import flumed.sinks.file_roll  # noqa: F401
    except ImportError:
        print("netcat -> memory -> file_roll: skipped (file_roll not available)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        port = _free_port()
        conf = Path(tmp) / "a.toml"
        conf.write_text(
            f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = false
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 200000
transactionCapacity = 20000
[agents.a1.sinks.k1]
type = "file_roll"
channel = "c1"
"sink.directory" = "{out}"
"sink.rollInterval" = 0
"sink.batchSize" = 20000
"""
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "flumed", "agent", "-f", str(conf), "-n", "a1"],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    s = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            line = b"x" * (LINE - 1) + b"\n"
            chunk = line * 10_000
            t0 = time.perf_counter()
            for _ in range(NETCAT_EVENTS // 10_000):
                s.sendall(chunk)
            s.close()
            want = NETCAT_EVENTS * LINE

            def written() -> int:
                return sum(p.stat().st_size for p in out.iterdir())

            while written() < want:
                time.sleep(0.01)
            dt = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
    rate = NETCAT_EVENTS / dt
    print(
        f"netcat (1 connection, 100-byte lines, no acks) -> memory -> file_roll: "
        f"{rate:,.0f} events/s, {rate * LINE / 1e6:.1f} MB/s",
        flush=True,
    )


def idle_rss() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "a.toml"
        conf.write_text(
            (Path(__file__).resolve().parents[2] / "flumed" / "default.toml")
            .read_text()
            .replace("44444", str(_free_port()))
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flumed",
                "agent",
                "-f",
                str(conf),
                "-n",
                "a1",
                "--metrics-port",
                str(_free_port()),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2.0)  # a benchmark, not a test: let it settle idle
            rss_kb = 0
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb = int(line.split()[1])
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"idle agent RSS (netcat -> memory -> logger, metrics on): {rss_kb / 1024:.1f} MB")


def main() -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    bench_seq()
    bench_netcat_file_roll()
    idle_rss()


if __name__ == "__main__":
    main()
