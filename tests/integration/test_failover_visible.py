"""Failover is visible: with the preferred collector down, the log says the group failed
over (naming the sinks and the cause) and /health names the group; when the collector
comes back the log says so and /health is 200 again. load_balance logs its backoffs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.util import AckingSender, free_port, wait_until_sync

EDGE = """
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 100000
[agents.a1.sinks.k1]
type = "avro"
hostname = "127.0.0.1"
port = {collector}
connect-timeout = 1000
channel = "c1"
[agents.a1.sinks.k2]
type = "null"
channel = "c1"
[agents.a1.sinkgroups.g1]
sinks = ["k1", "k2"]
[agents.a1.sinkgroups.g1.processor]
type = "{processor}"
{extra}
"""
COLLECTOR = """
[agents.a1.sources.r1]
type = "avro"
bind = "127.0.0.1"
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 100000
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
"""


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_failover_is_logged_and_reported_then_returns(agent_factory):
    port, collector = free_port(), free_port()
    extra = "priority.k1 = 10\npriority.k2 = 5\nmaxpenalty = 2000"
    edge = agent_factory(
        EDGE.format(port=port, collector=collector, processor="failover", extra=extra)
    )
    AckingSender(port).send_range(0, 100)
    wait_until_sync(
        lambda: "Sink group g1: failed over from sink k1 to sink k2: k1:" in edge.log(),
        what="the failover logged",
    )
    assert "Sink group g1: sink k1 failed, backing off for" in edge.log()
    status, body = health(edge.metrics_port)
    assert status == 503
    (problem,) = [p for p in body["problems"] if p["component"] == "SINKGROUP.g1"]
    assert problem["what"].startswith("running on sink k2 (its last sink); preferred sink k1")

    agent_factory(COLLECTOR.format(port=collector))
    AckingSender(port).send_range(100, 200)
    wait_until_sync(
        lambda: "Sink group g1: back on sink k1, its preferred sink." in edge.log(),
        timeout=60,
        what="the return to k1 logged",
    )
    assert "Sink group g1: sink k1 delivers again after" in edge.log()
    wait_until_sync(lambda: health(edge.metrics_port)[0] == 200, what="/health 200 again")


def test_load_balance_backoff_is_logged_and_reported(agent_factory):
    port, collector = free_port(), free_port()
    extra = 'backoff = true\nselector = "round_robin"'
    edge = agent_factory(
        EDGE.format(port=port, collector=collector, processor="load_balance", extra=extra)
    )
    AckingSender(port).send_range(0, 100)
    wait_until_sync(
        lambda: "Sink group g1: sink k1 failed, backing off for" in edge.log(),
        what="the backoff logged",
    )
    status, body = health(edge.metrics_port)
    assert status == 503
    assert any(
        p["component"] == "SINKGROUP.g1" and p["what"].startswith("sink k1 is failing")
        for p in body["problems"]
    )
