"""syslogtcp throughput: one TCP connection of RFC 5424 messages into a real agent.

`python -m tests.bench syslog`. The agent (syslogtcp → memory → null) runs as its own
process, as deployed; this process only sends a prepared buffer and polls the metrics
endpoint until the null sink has taken every message. Also prints the parser alone.
"""

from __future__ import annotations

import socket
import threading
import time

from flumed.cli import tune_gc
from flumed.sources.syslog_parser import SyslogFramer, SyslogParser
from tests.bench import _harness

N = 1_000_000


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


def parser_only(data: bytes) -> tuple[float, int]:
    """(messages/s, count) for framing + parsing alone, in this process (with the
    daemon's garbage-collector thresholds)."""
    tune_gc()
    framer = SyslogFramer(2500)
    parser = SyslogParser()
    step = 256 * 1024
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(data), step):
        lines, _ = framer.feed(data[i : i + step])
        events, _ = parser.parse(lines)
        n += len(events)
    return n / (time.perf_counter() - t0), n


def through_agent(data: bytes, n: int) -> float:
    """Seconds from the first byte sent to the null sink having taken all `n`."""
    source = 'type = "syslogtcp"\nhost = "127.0.0.1"'
    with _harness.agent_process(source, 10000) as (agent, port):
        sock = socket.create_connection(("127.0.0.1", port))
        t0 = time.perf_counter()
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        while agent.counter("SINK.k1", "EventDrainSuccessCount") < n:
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        sender.join()
        sock.close()
        accepted = agent.counter("SOURCE.r1", "EventAcceptedCount")
        assert accepted == n, f"accepted {accepted} of {n}"
        assert agent.counter("SOURCE.r1", "EventReadFail") == 0
    return elapsed


def main() -> None:
    data = messages(N)
    mb = len(data) / 1e6
    rate, n = parser_only(data)
    assert n == N
    print(f"syslog framing + parsing only (RFC 5424, in-process): {rate:,.0f} events/s")
    best = min(through_agent(data, N) for _ in range(3))
    print(
        f"syslogtcp (1 connection, RFC 5424, parsed) -> memory -> null: "
        f"{N / best:,.0f} events/s, {mb / best:.1f} MB/s (best of 3, {N:,} messages)"
    )


if __name__ == "__main__":
    main()
