"""A real `flumed agent` process: TCP lines in, metrics out, SIGTERM drain, SIGHUP reload."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

from tests.util import AckingSender, free_port, read_numbers, wait_until_sync

RECORD = "tests.support.record_sink:RecordSink"


def conf(
    port: int,
    out: Path,
    *,
    capacity: int = 100000,
    delay: float = 0.0,
    batch: int = 100,
    extra: str = "",
) -> str:
    return f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
channels = ["c1"]
{extra}
[agents.a1.channels.c1]
type = "memory"
capacity = {capacity}
transactionCapacity = 1000

[agents.a1.sinks.k1]
type = "{RECORD}"
channel = "c1"
path = "{out}"
batchSize = {batch}
delay = {delay}
"""


def test_lines_in_counters_out(agent_factory, tmp_path):
    port = free_port()
    out = tmp_path / "out.txt"
    agent = agent_factory(conf(port, out))
    sender = AckingSender(port)
    sender.send_range(0, 5000)
    assert sender.acked == 5000
    wait_until_sync(lambda: len(read_numbers(out)) == 5000, what="all lines recorded")
    assert read_numbers(out) == list(range(5000))
    m = agent.metrics()
    assert m["SOURCE.r1"]["EventReceivedCount"] == "5000"
    assert m["SOURCE.r1"]["EventAcceptedCount"] == "5000"
    assert m["SOURCE.r1"]["Type"] == "SOURCE"
    assert m["CHANNEL.c1"]["EventPutSuccessCount"] == "5000"
    assert m["CHANNEL.c1"]["EventTakeSuccessCount"] == "5000"
    assert m["CHANNEL.c1"]["ChannelSize"] == "0"
    assert m["CHANNEL.c1"]["ChannelCapacity"] == "100000"
    assert float(m["CHANNEL.c1"]["ChannelFillPercentage"]) == 0.0
    assert m["SINK.k1"]["EventDrainSuccessCount"] == "5000"
    assert all(isinstance(v, str) for comp in m.values() for v in comp.values())
    base = f"http://127.0.0.1:{agent.metrics_port}"
    with urllib.request.urlopen(base + "/metrics/prometheus") as r:
        text = r.read().decode()
    assert (
        'flume_event_accepted_total{agent="a1",kind="source",type="netcat",component="r1"} 5000'
        in text
    )
    assert "# TYPE flume_channel_size gauge" in text
    _check_prometheus_conventions(text)
    with urllib.request.urlopen(base + "/health") as r:
        health = json.loads(r.read())
    assert health["status"] == "UP"
    assert health["components"]["SOURCE.r1"] == "RUNNING"
    assert agent.terminate() == 0


def test_oversized_and_good_lines_from_two_clients(agent_factory, tmp_path):
    port = free_port()
    out = tmp_path / "out.txt"
    agent = agent_factory(conf(port, out, extra="max-line-length = 16"))
    bad = socket.create_connection(("127.0.0.1", port))
    bad.sendall(b"x" * 100 + b"\n" + b"7\n")
    f = bad.makefile("rb")
    assert f.readline().startswith(b"FAILED: Event exceeds the maximum length")
    assert f.readline() == b"OK\n"
    half_open = socket.create_connection(("127.0.0.1", port))
    half_open.sendall(b"123")  # never finished
    sender = AckingSender(port)
    sender.send_range(100, 200)
    wait_until_sync(lambda: len(read_numbers(out)) == 101)
    assert sorted(read_numbers(out)) == [7, *range(100, 200)]
    assert agent.counter("SOURCE.r1", "EventReadFail") == 1
    bad.close()
    half_open.close()


def test_sigterm_drains_channel_then_exits_zero(agent_factory, tmp_path):
    port = free_port()
    out = tmp_path / "out.txt"
    # A slow sink keeps events in the channel when SIGTERM arrives.
    agent = agent_factory(conf(port, out, delay=0.05, batch=100), extra_args=["--grace", "60"])
    AckingSender(port).send_range(0, 3000)
    assert agent.counter("CHANNEL.c1", "ChannelSize") > 0
    assert agent.terminate() == 0
    assert sorted(read_numbers(out)) == list(range(3000))
    assert "Agent a1 stopped." in agent.log()


def test_bad_reload_is_refused_and_old_graph_runs(agent_factory, tmp_path):
    port = free_port()
    out = tmp_path / "out.txt"
    agent = agent_factory(conf(port, out))
    agent.conf.write_text(conf(port, out).replace("capacity = 100000", 'capacity = "nope"'))
    agent.signal(signal.SIGHUP)
    wait_until_sync(lambda: "Reload refused" in agent.log(), what="reload refused")
    assert "channel c1: key 'capacity': expected an integer" in agent.log()
    AckingSender(port).send_range(0, 100)
    wait_until_sync(lambda: len(read_numbers(out)) == 100)


def _with_source(text: str, name: str, body: str) -> str:
    return text + f'\n[agents.a1.sources.{name}]\nchannels = ["c1"]\n{body}\n'


def test_reload_errors_leave_the_graph_running_and_sigterm_drains(agent_factory, tmp_path):
    """Issue 9 point 6: reloads that blow up (a type naming a non-component, a plugin whose
    constructor or start() raises) are logged, change nothing running, later reloads work,
    and SIGTERM still drains every acknowledged event."""
    port = free_port()
    out = tmp_path / "out.txt"
    base = conf(port, out, delay=0.2, batch=100)
    agent = agent_factory(base, extra_args=["--grace", "60"])
    AckingSender(port).send_range(0, 3000)
    assert agent.counter("CHANNEL.c1", "ChannelSize") > 0
    bad = [
        ('type = "flumed.sources.netcat:NetcatConfig"', "is not a Source"),
        ('type = "tests.support.broken:BrokenInitSource"', "the running graph is unchanged"),
        ('type = "tests.support.broken:BrokenStartSource"', "Reload incomplete"),
    ]
    for body, needle in bad:
        agent.conf.write_text(_with_source(base, "r9", body))
        agent.signal(signal.SIGHUP)
        wait_until_sync(lambda needle=needle: needle in agent.log(), 30, needle)
    # The original source still takes lines, and a valid reload works.
    AckingSender(port).send_range(3000, 3100)
    port2 = free_port()
    agent.conf.write_text(
        _with_source(base, "r2", f'type = "netcat"\nbind = "127.0.0.1"\nport = {port2}')
    )
    agent.signal(signal.SIGHUP)
    wait_until_sync(lambda: "Source r2 listening" in agent.log(), 30, "the valid reload")
    AckingSender(port2).send_range(3100, 3200)
    assert agent.terminate() == 0
    assert sorted(read_numbers(out)) == list(range(3200))
    assert "Agent a1 stopped." in agent.log()


def test_sighup_reload_under_load_loses_nothing(agent_factory, tmp_path):
    port = free_port()
    out = tmp_path / "out.txt"
    agent = agent_factory(conf(port, out, batch=100))
    total = 60_000
    sender = AckingSender(port, window=500)
    t = threading.Thread(target=sender.send_range, args=(0, total, 240.0))
    t.start()
    variants = [
        # sink changes only: the runner restarts, the source keeps its connections
        conf(port, out, batch=50),
        # channel changes: sources and sinks restart, the channel hands over its events
        conf(port, out, batch=50, capacity=50000),
        # the source changes (an extra key): it restarts, clients reconnect and resend
        conf(port, out, batch=50, capacity=50000, extra="max-line-length = 100"),
        conf(port, out, batch=200),
    ]
    reloads = 0
    for v in variants:
        wait_until_sync(lambda n=reloads: sender.acked > (n + 1) * total // 6, timeout=120)
        agent.conf.write_text(v)
        agent.signal(signal.SIGHUP)
        reloads += 1
        wait_until_sync(
            lambda n=reloads: agent.log().count("reloaded.") >= n, timeout=60, what="reload done"
        )
    t.join(300)
    assert not t.is_alive()
    wait_until_sync(
        lambda: len(set(read_numbers(out))) == total, timeout=120, what="every number recorded"
    )
    got = read_numbers(out)
    assert set(got) == set(range(total))
    dupes = sum(c - 1 for c in collections.Counter(got).values())
    # Each source restart may resend one window of unacknowledged lines.
    assert dupes <= reloads * sender.window
    assert agent.terminate() == 0


def test_metrics_404_and_index(agent_factory, tmp_path):
    agent = agent_factory(conf(free_port(), tmp_path / "o"))
    base = f"http://127.0.0.1:{agent.metrics_port}"
    try:
        urllib.request.urlopen(base + "/nope")
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    with urllib.request.urlopen(base + "/") as r:
        assert b"metrics" in r.read()


def test_bind_failure_is_a_clear_error(agent_factory, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    agent = agent_factory(conf(port, tmp_path / "o"), start=False)
    agent.start(wait=False)
    assert agent.proc is not None
    assert agent.proc.wait(30) == 1
    assert "source r1 failed to start" in agent.log()
    busy.close()


del asyncio


def _check_prometheus_conventions(text: str) -> None:
    """Parse with prometheus_client's own parser: every family has HELP and TYPE, every
    counter sample ends in _total, gauges are gauges, and the labels are all there."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families
    helps = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# HELP ")}
    types = {ln.split()[2]: ln.split()[3] for ln in text.splitlines() if ln.startswith("# TYPE ")}
    assert helps == set(types)
    for fam in families.values():
        assert fam.documentation, fam.name
        for sample in fam.samples:
            assert set(sample.labels) == {"agent", "kind", "type", "component"}, sample
            if fam.type == "counter":
                assert sample.name.endswith("_total"), sample.name
    # The counters the review found mistyped.
    assert families["flume_open_connection_count"].type == "gauge"
    assert families["flume_event_read_fail"].type == "counter"
    assert families["flume_channel_write_fail"].type == "counter"
    assert families["flume_channel_fill_percentage"].type == "gauge"
