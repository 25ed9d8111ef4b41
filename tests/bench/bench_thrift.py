"""Thrift hop between two real agent processes (`python -m tests.bench thrift`):

A: seq (100-byte bodies) -> memory -> thrift sink  ==TCP==>  B: thrift source -> memory -> null

Batches of 1,000 end to end. The rate is measured at B's null sink, from its first
drained batch to its last, so neither process's start-up counts. Figures are events/s
and MB/s of event bodies.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from flumed.event import Event
from flumed.sources.seq import SequenceGeneratorSource
from tests.util import AgentProcess, free_port

EVENTS = 1_000_000
BODY = 100
BATCH = 1000


class PaddedSeqSource(SequenceGeneratorSource):
    """`seq` whose bodies are the numbers zero-padded to BODY bytes."""

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._fmt = b"%0" + str(BODY).encode() + b"d"

    async def process(self):  # type: ignore[no-untyped-def]
        cfg = self.config
        if self._pending is None and self.next < cfg.totalEvents:
            end = min(self.next + cfg.batchSize, cfg.totalEvents)
            fmt = self._fmt
            self._pending = [Event(fmt % i) for i in range(self.next, end)]
        return await super().process()


def _conf(port: int, proto: str, tls: Path | None) -> tuple[str, str]:
    sink_tls = f'ssl = true\ntruststore = "{tls / "ca.pem"}"' if tls else ""
    source_tls = f'ssl = true\nkeystore = "{tls / "server.pem"}"' if tls else ""
    sender = f"""
[agents.a.sources.s]
type = "tests.bench.bench_thrift:PaddedSeqSource"
totalEvents = {EVENTS}
batchSize = {BATCH}
channels = ["c"]
[agents.a.channels.c]
type = "memory"
capacity = 50000
transactionCapacity = {BATCH}
keep-alive = 60
[agents.a.sinks.k]
type = "thrift"
channel = "c"
hostname = "127.0.0.1"
port = {port}
batch-size = {BATCH}
protocol = "{proto}"
{sink_tls}
"""
    receiver = f"""
[agents.b.sources.r]
type = "thrift"
bind = "127.0.0.1"
port = {port}
channels = ["c"]
{source_tls}
[agents.b.channels.c]
type = "memory"
capacity = 50000
transactionCapacity = {BATCH}
keep-alive = 60
[agents.b.sinks.k]
type = "null"
channel = "c"
batchSize = {BATCH}
"""
    return sender, receiver


def _run(proto: str, tls: bool = False) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        pki = None
        if tls:
            import trustme

            pki = Path(tmp)
            ca = trustme.CA()
            ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
                str(pki / "server.pem")
            )
            ca.cert_pem.write_to_path(str(pki / "ca.pem"))
        sender, receiver = _conf(port, proto, pki)
        (Path(tmp) / "a.toml").write_text(sender)
        (Path(tmp) / "b.toml").write_text(receiver)
        b = AgentProcess(Path(tmp) / "b.toml", name="b").start()
        a = AgentProcess(Path(tmp) / "a.toml", name="a")
        try:
            a.start()
            drained = 0
            while drained == 0:
                drained = b.counter("SINK.k", "EventDrainSuccessCount")
                time.sleep(0.005)
            t0, n0 = time.perf_counter(), drained
            while drained < EVENTS:
                time.sleep(0.005)
                drained = b.counter("SINK.k", "EventDrainSuccessCount")
            dt = time.perf_counter() - t0
        finally:
            for p in (a, b):
                p.terminate()
                p.close()
    return (EVENTS - n0) / dt


def main() -> None:
    for proto, tls in (("compact", False), ("binary", False), ("compact", True)):
        rate = statistics.median(_run(proto, tls) for _ in range(3))
        how = proto + (", TLS" if tls else "")
        print(
            f"seq ({BODY}-byte bodies) -> memory -> thrift sink ({how}) -> [process] -> "
            f"thrift source -> memory -> null (batch {BATCH}): {rate:,.0f} events/s, "
            f"{rate * BODY / 1e6:.1f} MB/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
