"""Tiers of real agent processes joined by Avro RPC: agent A (seq → channel → avro
sinks) forwards to collectors B (avro source → channel → a sink writing bodies to
files). Every number A generates must come out of some collector's files.

The last tests kill collectors with SIGKILL, with the file channel and the file_roll sink
on every hop.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from tests.integration.avro_helpers import make_pki
from tests.util import AgentProcess, free_port, wait_until_sync


def _value(v: object) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {_value(x)}' for k, x in v.items()) + "}"
    return json.dumps(v)


def _toml(table: str, keys: dict[str, object]) -> str:
    return f"[{table}]\n" + "".join(f'"{k}" = {_value(v)}\n' for k, v in keys.items())


def _channel(kind: str, data: Path) -> dict[str, object]:
    if kind == "file":
        # No fsync: only processes are killed here, and the page cache outlives them.
        return {
            "type": "file",
            "dataDirs": str(data),
            "capacity": 1_000_000,
            "transactionCapacity": 1000,
            "minimumRequiredSpace": 0,
            "fsyncPerTransaction": False,
        }
    return {"type": "memory", "capacity": 200_000, "transactionCapacity": 1000}


def upstream(
    ports: list[int],
    total: int,
    tmp: Path,
    kind: str = "memory",
    processor: dict[str, object] | None = None,
    batch: int = 1000,
    sink: dict[str, object] | None = None,
) -> str:
    """Agent a: seq → channel c → avro sinks k1..kn (one per port), grouped if several."""
    text = _toml(
        "agents.a.sources.s",
        {"type": "seq", "batchSize": batch, "totalEvents": total, "channels": ["c"]},
    )
    text += _toml("agents.a.channels.c", _channel(kind, tmp / "a-data"))
    for i, port in enumerate(ports, 1):
        text += _toml(
            f"agents.a.sinks.k{i}",
            {
                "type": "avro",
                "channel": "c",
                "hostname": "127.0.0.1",
                "port": port,
                "batch-size": batch,
                "request-timeout": 5000,
            }
            | (sink or {}),
        )
    if processor:
        sinks = [f"k{i}" for i in range(1, len(ports) + 1)]
        text += _toml("agents.a.sinkgroups.g", {"sinks": sinks})
        text += _toml("agents.a.sinkgroups.g.processor", processor)
    return text


def collector(
    port: int,
    out: Path,
    tmp: Path,
    kind: str = "memory",
    sink: dict[str, object] | None = None,
    channel: dict[str, object] | None = None,
    source: dict[str, object] | None = None,
) -> str:
    """Agent b: avro source → channel c → bodies as lines into files under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    text = _toml(
        "agents.b.sources.r",
        {"type": "avro", "bind": "127.0.0.1", "port": port, "channels": ["c"]} | (source or {}),
    )
    text += _toml("agents.b.channels.c", _channel(kind, tmp / f"{out.name}-data") | (channel or {}))
    if kind == "file":
        keys: dict[str, object] = {
            "type": "file_roll",
            "channel": "c",
            "sink.directory": str(out),
            "sink.rollInterval": 0,
            "sink.batchSize": 1000,
        }
    else:
        keys = {
            "type": "tests.support.record_sink:RecordSink",
            "channel": "c",
            "path": str(out / "bodies.txt"),
            "batchSize": 1000,
        }
    keys.update(sink or {})
    return text + _toml("agents.b.sinks.k", keys)


def lines(*dirs: Path) -> int:
    """Complete lines written so far (cheap; duplicates count)."""
    return sum(p.read_bytes().count(b"\n") for d in dirs for p in d.iterdir() if p.is_file())


def distinct(*dirs: Path) -> int:
    """Distinct numbers in the complete lines written so far (a file may be mid-write)."""
    seen: set[bytes] = set()
    for d in dirs:
        for p in d.iterdir():
            seen.update(p.read_bytes().split(b"\n")[:-1])
    return len(seen)


def numbers(*dirs: Path) -> collections.Counter[int]:
    """Every body written under `dirs`; each must be a whole number (no torn lines)."""
    out: collections.Counter[int] = collections.Counter()
    for d in dirs:
        for p in sorted(d.iterdir()):
            data = p.read_bytes()
            assert not data or data.endswith(b"\n"), f"{p}: torn last line"
            out.update(int(x) for x in data.split(b"\n")[:-1])
    return out


def check_delivery(got: collections.Counter[int], total: int, max_dups: int) -> None:
    missing = [n for n in range(total) if got[n] == 0]
    assert not missing, f"{len(missing)} events lost, e.g. {missing[:10]}"
    assert set(got) == set(range(total)), "numbers that were never sent"
    dups = sum(got.values()) - total
    assert dups <= max_dups, f"{dups} duplicates (bound {max_dups})"


class Tier:
    """Makes agent processes from config text; all are stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[AgentProcess] = []

    def agent(self, text: str, label: str) -> AgentProcess:
        """Start agent `a` or `b` (the first letter of `label`) from `text`."""
        conf = self.tmp / f"{label}-{len(self.procs)}.toml"
        conf.write_text(text)
        p = AgentProcess(conf, name=label[0])
        self.procs.append(p)
        return p.start()

    def close(self) -> None:
        for p in self.procs:
            p.close()


@pytest.fixture
def tier(tmp_path: Path):
    t = Tier(tmp_path)
    yield t
    t.close()


# -- tiers that need no durability --------------------------------------------------------


def test_two_tiers(tier: Tier, tmp_path: Path) -> None:
    total = 50_000
    port = free_port()
    out = tmp_path / "b"
    b = tier.agent(collector(port, out, tmp_path), "b")
    a = tier.agent(upstream([port], total, tmp_path), "a")
    wait_until_sync(lambda: distinct(out) >= total, timeout=120, what="all events at b")
    check_delivery(numbers(out), total, max_dups=0)
    assert a.counter("SINK.k1", "EventDrainSuccessCount") == total
    assert b.counter("SOURCE.r", "AppendBatchAcceptedCount") == total // 1000
    assert b.counter("SOURCE.r", "ChannelWriteFail") == 0


def test_tls_and_deflate_tier(tier: Tier, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    total = 30_000
    port = free_port()
    out = tmp_path / "b"
    tls = {"ssl": True, "compression-type": "deflate"}
    source = tls | {"certificate": pki.chain, "key": pki.key}
    tier.agent(collector(port, out, tmp_path, source=source), "b")
    a = tier.agent(upstream([port], total, tmp_path, sink=tls | {"truststore": pki.ca}), "a")
    wait_until_sync(lambda: distinct(out) >= total, timeout=120, what="events over TLS")
    check_delivery(numbers(out), total, max_dups=0)
    assert a.counter("SINK.k1", "ConnectionCreatedCount") == 1


def test_ip_filter_refuses_the_sender(tier: Tier, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "b"
    source = {"ipFilter": True, "ipFilterRules": "deny:ip:127.0.0.*,allow:ip:*"}
    b = tier.agent(collector(port, out, tmp_path, source=source), "b")
    a = tier.agent(upstream([port], 1000, tmp_path), "a")
    wait_until_sync(lambda: a.counter("SINK.k1", "EventWriteFail") >= 2, what="refusals")
    assert "refused by ipFilterRules" in b.log()
    assert lines(out) == 0 and b.counter("SOURCE.r", "EventReceivedCount") == 0
    assert a.counter("CHANNEL.c", "ChannelSize") == 1000  # kept for when it is let in


def _slow_collector(port: int, out: Path, tmp: Path) -> str:
    # A small channel drained slowly: the collector accepts ~10,000 events/s, so that
    # the stream lasts long enough to stop one collector in the middle of it.
    return collector(
        port, out, tmp, sink={"batchSize": 100, "delay": 0.01}, channel={"capacity": 2000}
    )


def test_failover_between_collectors(tier: Tier, tmp_path: Path) -> None:
    total = 40_000
    p1, p2 = free_port(), free_port()
    o1, o2 = tmp_path / "b1", tmp_path / "b2"
    b1 = tier.agent(_slow_collector(p1, o1, tmp_path), "b1")
    tier.agent(_slow_collector(p2, o2, tmp_path), "b2")
    processor = {"type": "failover", "priority": {"k1": 10, "k2": 5}, "maxpenalty": 10000}
    tier.agent(upstream([p1, p2], total, tmp_path, processor=processor, batch=100), "a")
    wait_until_sync(lambda: lines(o1) >= 5000, timeout=60, what="b1 active")
    assert lines(o2) < lines(o1)  # the higher priority gets the stream
    assert b1.terminate() == 0  # graceful: b1 answers what it holds, drains its channel
    wait_until_sync(lambda: distinct(o1, o2) >= total, timeout=120, what="the rest via b2")
    check_delivery(numbers(o1, o2), total, max_dups=100)
    assert lines(o2) > 0


def test_load_balance_between_collectors(tier: Tier, tmp_path: Path) -> None:
    total = 40_000
    p1, p2 = free_port(), free_port()
    o1, o2 = tmp_path / "b1", tmp_path / "b2"
    tier.agent(_slow_collector(p1, o1, tmp_path), "b1")
    b2 = tier.agent(_slow_collector(p2, o2, tmp_path), "b2")
    processor = {"type": "load_balance", "selector": "round_robin", "backoff": True}
    tier.agent(upstream([p1, p2], total, tmp_path, processor=processor, batch=100), "a")
    wait_until_sync(lambda: lines(o1) >= 2000 and lines(o2) >= 2000, timeout=60, what="shares")
    assert b2.terminate() == 0
    wait_until_sync(lambda: distinct(o1, o2) >= total, timeout=120, what="the rest via b1")
    check_delivery(numbers(o1, o2), total, max_dups=100)


# -- collectors killed with SIGKILL: durable channels on every hop ------------------------


def test_collector_killed_repeatedly(tier: Tier, tmp_path: Path) -> None:
    total = 100_000
    port = free_port()
    out = tmp_path / "b"
    b = tier.agent(collector(port, out, tmp_path, kind="file"), "b")
    tier.agent(upstream([port], total, tmp_path, kind="file"), "a")
    kills = 0
    for share in (0.15, 0.4, 0.65):
        wait_until_sync(lambda s=share: lines(out) >= total * s, timeout=120, what=f"{share}")
        b.kill()
        kills += 1
        assert lines(out) < total, "the stream ended before the kill: nothing was tested"
        b.start()
    wait_until_sync(lambda: distinct(out) >= total, timeout=120, what="every event after kills")
    # Per kill: the batch b committed but did not answer, and the batch its sink wrote
    # but did not commit, may come again.
    check_delivery(numbers(out), total, max_dups=kills * 2 * 1000)


def test_failover_active_collector_killed(tier: Tier, tmp_path: Path) -> None:
    total = 100_000
    p1, p2 = free_port(), free_port()
    o1, o2 = tmp_path / "b1", tmp_path / "b2"
    b1 = tier.agent(collector(p1, o1, tmp_path, kind="file"), "b1")
    tier.agent(collector(p2, o2, tmp_path, kind="file"), "b2")
    processor = {"type": "failover", "priority": {"k1": 10, "k2": 5}, "maxpenalty": 60000}
    a = tier.agent(upstream([p1, p2], total, tmp_path, kind="file", processor=processor), "a")
    wait_until_sync(lambda: lines(o1) >= total * 0.2, timeout=120, what="b1 active")
    assert lines(o2) < lines(o1)  # the higher priority gets the stream
    b1.kill()
    assert lines(o1) < total, "the stream ended before the kill"
    wait_until_sync(lambda: a.counter("CHANNEL.c", "ChannelSize") == 0, timeout=120)
    assert lines(o2) > 0
    b1.start()  # what b1 committed before the kill is in its channel: let it drain
    wait_until_sync(lambda: distinct(o1, o2) >= total, timeout=120, what="every event")
    check_delivery(numbers(o1, o2), total, max_dups=2 * 1000)


def test_load_balance_collector_killed(tier: Tier, tmp_path: Path) -> None:
    total = 100_000
    p1, p2 = free_port(), free_port()
    o1, o2 = tmp_path / "b1", tmp_path / "b2"
    tier.agent(collector(p1, o1, tmp_path, kind="file"), "b1")
    b2 = tier.agent(collector(p2, o2, tmp_path, kind="file"), "b2")
    processor = {"type": "load_balance", "selector": "round_robin", "backoff": True}
    a = tier.agent(upstream([p1, p2], total, tmp_path, kind="file", processor=processor), "a")
    share = total * 0.1
    wait_until_sync(lambda: lines(o1) >= share and lines(o2) >= share, timeout=120)
    b2.kill()
    assert lines(o1, o2) < total, "the stream ended before the kill"
    wait_until_sync(lambda: a.counter("CHANNEL.c", "ChannelSize") == 0, timeout=120)
    b2.start()
    wait_until_sync(lambda: distinct(o1, o2) >= total, timeout=120, what="every event")
    check_delivery(numbers(o1, o2), total, max_dups=2 * 1000)
