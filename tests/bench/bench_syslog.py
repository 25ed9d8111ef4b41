"""syslogtcp throughput: RFC 5424 messages into a real agent, one process or workers.

`python -m tests.bench syslog`. The agent (syslogtcp → memory → null) runs as its own
process, as deployed; this process only sends prepared buffers and polls the metrics
endpoint until the null sink has taken every message. Also prints the parser alone
(RFC 5424 and RFC 3164, keepFields none and all), and `--workers 2` against one
process on 8 connections (SO_REUSEPORT spreads connections, not one connection's
messages), the load generator on the same machine, runs interleaved.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from flumed.cli import tune_gc
from flumed.sources.syslog_parser import SyslogFramer, SyslogParser
from tests.util import AgentProcess, free_port

N = int(os.environ.get("FLUMED_BENCH_N", "1000000"))
CONNECTIONS = 8


def messages(n: int) -> bytes:
    """rsyslog-shaped RFC 5424 lines: second-resolution stamps change every 1000."""
    out = []
    for i in range(n):
        sec, us = divmod(i, 1000)
        out.append(
            b"<165>1 2024-05-01T10:%02d:%02d.%06d+02:00 web%d.example.com nginx %d - - "
            b"GET /index.html?id=%d HTTP/1.1 200 5123 request served\n"
            % (sec // 60 % 60, sec % 60, us * 997 % 1_000_000, i % 8, 1000 + i % 50, i)
        )
    return b"".join(out)


def messages3164(n: int) -> bytes:
    """util-linux logger's RFC 3164 shape; the stamp changes every 1000."""
    out = []
    for i in range(n):
        sec = i // 1000
        out.append(
            b"<13>Nov %2d %02d:%02d:%02d web%d.example.com nginx[%d]: "
            b"GET /index.html?id=%d HTTP/1.1 200 5123 request served\n"
            % (1 + sec // 86400 % 28, sec // 3600 % 24, sec // 60 % 60, sec % 60, i % 8,
               1000 + i % 50, i)
        )  # fmt: skip
    return b"".join(out)


def parser_only(data: bytes, keep_fields: str = "none") -> tuple[float, int]:
    """(messages/s, count) for framing + parsing alone, in this process (with the
    daemon's garbage-collector thresholds)."""
    tune_gc()
    framer = SyslogFramer(2500)
    parser = SyslogParser(keep_fields)
    step = 256 * 1024
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(data), step):
        lines, _ = framer.feed(data[i : i + step])
        events, _ = parser.parse(lines)
        n += len(events)
    return n / (time.perf_counter() - t0), n


def through_agent(data: bytes | list[bytes], n: int, workers: int = 1) -> float:
    """Seconds from the first byte sent to the null sink having taken all `n`; a list
    of buffers is sent on as many connections at once."""
    parts = data if isinstance(data, list) else [data]
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "bench.toml"
        conf.write_text(f"""
[agents.a1.sources.r1]
type = "syslogtcp"
host = "127.0.0.1"
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 100000
transactionCapacity = 10000
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
batchSize = 10000
""")
        extra = ["--workers", str(workers)] if workers > 1 else []
        agent = AgentProcess(conf, extra_args=extra).start(timeout=60)
        try:
            socks = [socket.create_connection(("127.0.0.1", port)) for _ in parts]
            t0 = time.perf_counter()
            senders = [
                threading.Thread(target=s.sendall, args=(d,))
                for s, d in zip(socks, parts, strict=True)
            ]
            for t in senders:
                t.start()
            while agent.counter("SINK.k1", "EventDrainSuccessCount") < n:
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
            for t in senders:
                t.join()
            for s in socks:
                s.close()
            accepted = agent.counter("SOURCE.r1", "EventAcceptedCount")
            assert accepted == n, f"accepted {accepted} of {n}"
            assert agent.counter("SOURCE.r1", "EventReadFail") == 0
            agent.terminate()
        finally:
            agent.close()
    return elapsed


def split_lines(data: bytes, parts: int) -> list[bytes]:
    """`data` cut at line ends into `parts` buffers of about equal size."""
    out = []
    start = 0
    for i in range(1, parts + 1):
        end = len(data) if i == parts else data.index(b"\n", len(data) * i // parts) + 1
        out.append(data[start:end])
        start = end
    return out


def workers_vs_one(data: bytes, n: int) -> None:
    """`--workers 2` against one process, 8 connections, interleaved, median of 3."""
    parts = split_lines(data, CONNECTIONS)
    one: list[float] = []
    two: list[float] = []
    for _ in range(3):
        one.append(through_agent(parts, n, 1))
        two.append(through_agent(parts, n, 2))
    r1, r2 = n / statistics.median(one), n / statistics.median(two)
    mb = len(data) / 1e6
    for label, r in (("1 process", r1), ("--workers 2", r2)):
        print(
            f"syslogtcp ({CONNECTIONS} connections, RFC 5424, parsed) -> memory -> null, "
            f"{label}: {r:,.0f} events/s, {r * mb / n:.1f} MB/s (median of 3)"
        )
    print(f"--workers 2 / 1 process: {r2 / r1:.2f}x (load generator on the same machine)")


def main() -> None:
    data = messages(N)
    mb = len(data) / 1e6
    old = messages3164(N // 4)
    for label, d, keep in (
        ("RFC 5424", data, "none"),
        ("RFC 5424, keepFields=all", data, "all"),
        ("RFC 3164", old, "none"),
        ("RFC 3164, keepFields=all", old, "all"),
    ):
        rate, n = parser_only(d, keep)
        assert n == d.count(b"\n")
        print(f"syslog framing + parsing only ({label}, in-process): {rate:,.0f} events/s")
    best = min(through_agent(data, N) for _ in range(3))
    print(
        f"syslogtcp (1 connection, RFC 5424, parsed) -> memory -> null: "
        f"{N / best:,.0f} events/s, {mb / best:.1f} MB/s (best of 3, {N:,} messages)"
    )
    workers_vs_one(data, N)


if __name__ == "__main__":
    main()
