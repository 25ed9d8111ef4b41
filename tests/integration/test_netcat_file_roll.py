"""A real agent process: netcat → memory → file_roll, fed over TCP, read back from disk."""

from __future__ import annotations

import socket
from pathlib import Path

import fastavro

from tests.util import free_port, wait_until_sync

N = 2000


def conf(port: int, out: Path, serializer: str = "text", roll: float = 30) -> str:
    return f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = true
channels = ["c1"]

[agents.a1.sources.r1.interceptors.i1]
type = "static"
key = "origin"
value = "nc"

[agents.a1.channels.c1]
type = "memory"
capacity = 10000
transactionCapacity = 1000

[agents.a1.sinks.k1]
type = "file_roll"
channel = "c1"

[agents.a1.sinks.k1.sink]
directory = "{out}"
rollInterval = {roll}
batchSize = 250
serializer = "{serializer}"
"""


def send_lines(port: int, lines: list[bytes]) -> None:
    """Send every line and read one OK per line (netcat's ack-every-event)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"".join(line + b"\n" for line in lines))
        acks = b""
        while acks.count(b"\n") < len(lines):
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {acks.count(b'OK')} acks"
            acks += chunk
    assert acks == b"OK\n" * len(lines)


def lines_on_disk(out: Path) -> list[bytes]:
    data = b"".join(p.read_bytes() for p in sorted(out.iterdir()))
    return data.splitlines()


def test_netcat_to_file_roll(agent_factory, tmp_path: Path):
    port = free_port()
    out = tmp_path / "out"
    agent = agent_factory(conf(port, out))
    sent = [b"event %05d %s" % (i, b"x" * (i % 50)) for i in range(N)]
    send_lines(port, sent[: N // 2])
    send_lines(port, sent[N // 2 :])

    def delivered() -> bool:
        m = agent.metrics()
        return int(m["SINK.k1"]["EventDrainSuccessCount"]) == N

    wait_until_sync(delivered, what=f"{N} events drained to the file")
    # Every acknowledged line is on disk, once, in order, before the agent stops.
    assert lines_on_disk(out) == sent
    m = agent.metrics()
    assert m["SOURCE.r1"]["EventReceivedCount"] == str(N)
    assert m["SOURCE.r1"]["EventAcceptedCount"] == str(N)
    assert m["CHANNEL.c1"]["ChannelSize"] == "0"
    assert m["CHANNEL.c1"]["EventPutSuccessCount"] == str(N)
    assert m["CHANNEL.c1"]["EventTakeSuccessCount"] == str(N)
    assert m["SINK.k1"]["EventDrainAttemptCount"] == str(N)
    assert m["SINK.k1"]["ConnectionCreatedCount"] == "1"
    assert m["SINK.k1"]["EventWriteFail"] == "0"
    assert agent.terminate() == 0
    assert lines_on_disk(out) == sent


def test_netcat_to_file_roll_avro_rolls_files(agent_factory, tmp_path: Path):
    port = free_port()
    out = tmp_path / "out"
    agent = agent_factory(conf(port, out, serializer="avro_event", roll=0.2))
    rounds = [[b"r%d-%d" % (r, i) for i in range(100)] for r in range(3)]
    for r, lines in enumerate(rounds):
        send_lines(port, lines)
        # The next round goes to a new file once this one was closed by the roll.
        wait_until_sync(
            lambda r=r: agent.counter("SINK.k1", "ConnectionClosedCount") > r,
            what=f"file {r + 1} closed",
        )
    assert agent.terminate() == 0
    paths = sorted(out.iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert len(paths) == 3
    for p, lines in zip(paths, rounds, strict=True):
        with p.open("rb") as fh:
            records = list(fastavro.reader(fh))
        assert [r["body"] for r in records] == lines
        assert all(r["headers"] == {"origin": "nc"} for r in records)


def test_drained_events_survive_sigkill_in_a_readable_avro_file(agent_factory, tmp_path: Path):
    """What the sink committed is in the file, whole, when the agent is killed (-9)."""
    port = free_port()
    out = tmp_path / "out"
    agent = agent_factory(conf(port, out, serializer="avro_event"))
    sent = [b"k%d" % i for i in range(1000)]
    send_lines(port, sent)
    wait_until_sync(
        lambda: agent.counter("SINK.k1", "EventDrainSuccessCount") == len(sent),
        what="all events drained",
    )
    agent.kill()
    (path,) = out.iterdir()
    with path.open("rb") as fh:
        assert [r["body"] for r in fastavro.reader(fh)] == sent
