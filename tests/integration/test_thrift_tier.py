"""Two real agent processes chained by Thrift RPC: A (seq → memory → thrift sink) →
B (thrift source → memory → a sink that writes every body to a file). Every event is
counted at the far end."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.support.pki import Pki
from tests.util import free_port, wait_until_sync


def sender_conf(port: int, total: int, batch: int, proto: str = "compact") -> str:
    return f"""
[agents.a.sources.s]
type = "seq"
totalEvents = {total}
batchSize = {batch}
channels = ["c"]

[agents.a.channels.c]
type = "memory"
capacity = {max(total, 1000)}
transactionCapacity = {batch}

[agents.a.sinks.k]
type = "thrift"
channel = "c"
hostname = "127.0.0.1"
port = {port}
batch-size = {batch}
protocol = "{proto}"
connect-timeout = 1000
"""


def receiver_conf(
    port: int, out: Path, capacity: int = 20000, keep_alive: float = 3.0, delay: float = 0.0
) -> str:
    return f"""
[agents.b.sources.r]
type = "thrift"
bind = "127.0.0.1"
port = {port}
channels = ["c"]

[agents.b.channels.c]
type = "memory"
capacity = {capacity}
transactionCapacity = {min(capacity, 1000)}
keep-alive = {keep_alive}

[agents.b.sinks.k]
type = "tests.support.record_sink:RecordSink"
channel = "c"
path = "{out}"
batchSize = 100
delay = {delay}
"""


def recorded(path: Path) -> list[int]:
    return [int(x) for x in path.read_bytes().split()] if path.exists() else []


@pytest.mark.parametrize("proto", ["compact", "binary"])
def test_two_agents_deliver_every_event(agent_factory, tmp_path: Path, proto):
    port, out, n = free_port(), tmp_path / "out.txt", 20000
    b = agent_factory(receiver_conf(port, out), name="b")
    a = agent_factory(sender_conf(port, n, 1000, proto), name="a")
    wait_until_sync(lambda: len(recorded(out)) >= n, 60, f"{n} events at B")
    assert sorted(recorded(out)) == list(range(n))
    wait_until_sync(lambda: a.counter("SINK.k", "EventDrainSuccessCount") == n, 30)
    assert a.counter("SINK.k", "ConnectionFailedCount") == 0
    assert a.counter("SINK.k", "EventWriteFail") == 0
    assert b.counter("SOURCE.r", "EventAcceptedCount") == n
    assert b.counter("SOURCE.r", "AppendBatchAcceptedCount") == n // 1000
    assert a.terminate() == 0 and b.terminate() == 0


def test_next_hop_down_full_and_restarted_loses_nothing(agent_factory, tmp_path: Path):
    """B is down when A starts (A keeps its events and counts refused connections); B's
    channel then overflows (B answers FAILED, A rolls back and retries); B is restarted
    mid-stream. Every event arrives, duplicates bounded by a batch."""
    port, out, n, batch = free_port(), tmp_path / "out.txt", 4000, 200
    b = agent_factory(
        receiver_conf(port, out, capacity=400, keep_alive=0.01, delay=0.05), name="b", start=False
    )
    a = agent_factory(sender_conf(port, n, batch), name="a")
    wait_until_sync(lambda: a.counter("SINK.k", "ConnectionFailedCount") >= 1, 30)
    assert a.counter("CHANNEL.c", "ChannelSize") == n
    assert a.counter("SINK.k", "EventDrainAttemptCount") == 0

    b.start()
    wait_until_sync(lambda: b.counter("SOURCE.r", "ChannelWriteFail") >= 1, 30, "FAILED at B")
    wait_until_sync(lambda: a.counter("SINK.k", "EventWriteFail") >= 1, 30, "A rolled back")
    wait_until_sync(lambda: len(recorded(out)) >= n // 4, 60, "a quarter at B")
    assert b.terminate() == 0  # graceful: answers its call in flight, drains its channel
    mid = len(recorded(out))
    assert mid < n
    b.start()
    wait_until_sync(lambda: set(recorded(out)) >= set(range(n)), 90, f"all {n} events at B")
    got = recorded(out)
    assert set(got) == set(range(n))
    assert len(got) - n <= batch
    wait_until_sync(lambda: a.counter("SINK.k", "EventDrainSuccessCount") == n, 30)
    assert a.counter("CHANNEL.c", "ChannelSize") == 0
    assert a.terminate() == 0 and b.terminate() == 0


def test_tls_hop_between_processes_and_a_bad_client(agent_factory, tmp_path: Path, pki: Pki):
    """The agents run uvloop: TLS (start_tls per connection) and the logged reasons for
    a client that does not speak TLS, checked there too."""
    shutil.copy(pki.server, tmp_path / "server.pem")
    shutil.copy(pki.ca, tmp_path / "ca.pem")
    port, out, n = free_port(), tmp_path / "out.txt", 5000
    tls_source = f'ssl = true\nkeystore = "{tmp_path / "server.pem"}"\n'
    b = agent_factory(
        receiver_conf(port, out).replace('channels = ["c"]\n', 'channels = ["c"]\n' + tls_source),
        name="b",
    )
    tls_sink = f'ssl = true\ntruststore = "{tmp_path / "ca.pem"}"\n'
    a = agent_factory(sender_conf(port, n, 500) + tls_sink, name="a")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x00\x00\x00\x10" + b"\x82" * 16)  # plain Thrift on the TLS port
        assert s.recv(100) == b""
    wait_until_sync(lambda: len(recorded(out)) >= n, 60, f"{n} events at B")
    assert sorted(recorded(out)) == list(range(n))
    wait_until_sync(lambda: "TLS handshake failed" in b.log(), 10, "the logged reason")
    assert b.counter("SOURCE.r", "EventReadFail") == 1
    assert a.counter("SINK.k", "ConnectionCreatedCount") == 1
    assert a.terminate() == 0 and b.terminate() == 0
