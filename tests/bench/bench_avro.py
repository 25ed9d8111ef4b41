"""Avro RPC across a link: seq -> memory -> avro sink => avro source -> memory -> null,
the two agents in two processes, batch 1,000, 100-byte bodies; beside it the same
source into memory -> null in one process (what the link costs).

`python -m tests.bench avro`. The sending agent's source is `BodySeqSource` below, the
`seq` source with bodies zero-padded to `bodySize` bytes, loaded by class path as a
Flume user's custom source would be.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flumed.agent import Agent
from flumed.config.graph import build_agent
from flumed.config.keys import key
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.sources.base import PollableSource, Status
from tests.bench import _harness

EVENTS = 1_000_000
BODY = 100
BATCH = 1000
ROUNDS = 3


@dataclass(frozen=True, slots=True)
class BodySeqConfig:
    batchSize: int = key(1000, ge=1)
    totalEvents: int = key(2**63 - 1, ge=0)
    bodySize: int = key(100, ge=1)


class BodySeqSource(PollableSource):
    """`seq` with fixed-size bodies: the number, zero-padded to bodySize bytes."""

    Config = BodySeqConfig
    config: BodySeqConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.next = 0
        self._fmt = b"%0" + str(config.bodySize).encode() + b"d"

    async def process(self) -> Status:
        cfg = self.config
        if self.next >= cfg.totalEvents:
            return Status.BACKOFF
        end = min(self.next + cfg.batchSize, cfg.totalEvents)
        fmt = self._fmt
        batch = [Event(fmt % i) for i in range(self.next, end)]
        try:
            await self.processor.process_batch(batch)
        except ChannelError:
            return Status.BACKOFF
        self.next = end
        self.counter.EventAcceptedCount += len(batch)
        return Status.READY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sender(port: int, total: int, sink_keys: str = "") -> str:
    return f"""
[agents.a.sources.s]
type = "tests.bench.bench_avro:BodySeqSource"
batchSize = {BATCH}
totalEvents = {total}
bodySize = {BODY}
channels = ["c"]
[agents.a.channels.c]
type = "memory"
capacity = 100000
transactionCapacity = {BATCH}
[agents.a.sinks.k]
type = "avro"
channel = "c"
hostname = "127.0.0.1"
port = {port}
batch-size = {BATCH}
{sink_keys}
"""


def _receiver(port: int, source_keys: str = "") -> str:
    return f"""
[agents.b.sources.r]
type = "avro"
bind = "127.0.0.1"
port = {port}
channels = ["c"]
{source_keys}
[agents.b.channels.c]
type = "memory"
capacity = 100000
transactionCapacity = {BATCH}
[agents.b.sinks.k]
type = "null"
channel = "c"
batchSize = {BATCH}
"""


def _drained(metrics_port: int) -> int:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        return int(json.loads(r.read())["SINK.k"]["EventDrainSuccessCount"])


def _start(conf: Path, name: str, metrics: int | None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "flumed", "agent", "-f", str(conf), "-n", name]
    if metrics:
        args += ["--metrics-port", str(metrics), "--metrics-bind", "127.0.0.1"]
    return subprocess.Popen(args, stderr=subprocess.DEVNULL)


def link_rate(source_keys: str = "", sink_keys: str = "", total: int = EVENTS) -> float:
    """Events/s through the link, from the first to the last event drained at b."""
    with tempfile.TemporaryDirectory() as tmp:
        port, metrics = _free_port(), _free_port()
        bconf, aconf = Path(tmp) / "b.toml", Path(tmp) / "a.toml"
        bconf.write_text(_receiver(port, source_keys))
        aconf.write_text(_sender(port, total, sink_keys))
        b = _start(bconf, "b", metrics)
        a = None
        try:
            deadline = time.monotonic() + 30
            while True:  # a benchmark, not a test: poll until b serves its metrics
                try:
                    _drained(metrics)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            a = _start(aconf, "a", None)
            first: tuple[float, int] | None = None
            while True:
                n = _drained(metrics)
                now = time.perf_counter()
                if first is None and n > 0:
                    first = (now, n)
                if n >= total:
                    break
                if time.monotonic() > deadline + 300:
                    raise RuntimeError(f"only {n} of {total} events arrived")
                time.sleep(0.01)
            assert first is not None
            return (total - first[1]) / (now - first[0])
        finally:
            for p in (a, b):
                if p is not None:
                    p.terminate()
                    p.wait(30)


async def _in_process(total: int) -> float:
    doc = tomllib.loads(
        f"""
[agents.a.sources.s]
type = "tests.bench.bench_avro:BodySeqSource"
batchSize = {BATCH}
totalEvents = {total}
bodySize = {BODY}
channels = ["c"]
[agents.a.channels.c]
type = "memory"
capacity = 100000
transactionCapacity = {BATCH}
[agents.a.sinks.k]
type = "null"
channel = "c"
batchSize = {BATCH}
"""
    )
    agent = Agent(build_agent(doc, "a", "bench"))
    _harness.started()
    t0 = time.perf_counter()
    await agent.start()
    sink = agent.sinks["k"]
    while sink.counter.EventDrainSuccessCount < total:
        await asyncio.sleep(0.002)
    dt = time.perf_counter() - t0
    await agent.stop()
    return total / dt


def _line(label: str, rate: float) -> None:
    print(f"{label}: {rate:,.0f} events/s, {rate * BODY / 1e6:.1f} MB/s", flush=True)


def main() -> None:

    os.environ.setdefault("PYTHONHASHSEED", "0")
    local = statistics.median(_harness.run(_in_process(EVENTS)) for _ in range(ROUNDS))
    _line("seq -> memory -> null (in-process, batch 1000, 100-byte bodies)", local)
    link = statistics.median(link_rate() for _ in range(ROUNDS))
    _line(
        "seq -> memory -> avro sink => avro source -> memory -> null "
        "(two processes, batch 1000, 100-byte bodies)",
        link,
    )
    deflate = '"compression-type" = "deflate"'
    _line(
        "  the same with compression-type = deflate (level 6)",
        link_rate(deflate, deflate, EVENTS // 2),
    )
    try:
        import trustme
    except ImportError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        chain, keyf, caf = (str(Path(tmp) / n) for n in ("chain.pem", "key.pem", "ca.pem"))
        Path(chain).write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(keyf)
        ca.cert_pem.write_to_path(caf)
        src = f'ssl = true\ncertificate = "{chain}"\nkey = "{keyf}"'
        _line(
            "  the same with ssl = true (TLS 1.3)",
            link_rate(src, f'ssl = true\ntruststore = "{caf}"', EVENTS // 2),
        )


if __name__ == "__main__":
    main()
