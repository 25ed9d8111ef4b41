"""/health tells the truth: a collector unreachable and a full channel answer 503 with the
problems; /health/live stays 200; once the collector is back and the channel drains, 200."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.util import free_port, wait_until_sync


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


EDGE = """
[agents.a1.sources.r1]
type = "seq"
batchSize = 10
totalEvents = 500
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 100
transactionCapacity = 100
keep-alive = 0
[agents.a1.sinks.k1]
type = "avro"
hostname = "127.0.0.1"
port = {port}
batch-size = 100
connect-timeout = 1000
channel = "c1"
"""

COLLECTOR = """
[agents.a1.sources.r1]
type = "avro"
bind = "127.0.0.1"
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 10000
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
"""


def test_health_reports_unreachable_collector_and_full_channel(agent_factory):
    port = free_port()
    edge = agent_factory(EDGE.format(port=port), extra_args=["--health-grace", "1"])
    mp = edge.metrics_port

    def down() -> bool:
        status, body = _get(mp, "/health")
        return status == 503 and {p["component"] for p in body["problems"]} >= {
            "CHANNEL.c1",
            "SINK.k1",
        }

    wait_until_sync(down, what="/health 503 naming the channel and the sink")
    status, body = _get(mp, "/health")
    assert status == 503
    assert body["status"] == "DOWN"
    by = {p["component"]: p for p in body["problems"]}
    assert by["CHANNEL.c1"]["what"].startswith("full: 100 of 100 events")
    assert "has not delivered" in by["SINK.k1"]["what"]
    assert "holds 100 events" in by["SINK.k1"]["what"]
    assert by["SINK.k1"]["since"].endswith("+00:00")
    assert _get(mp, "/health/live") == (200, {"status": "UP"})

    collector = agent_factory(COLLECTOR.format(port=port))
    wait_until_sync(
        lambda: collector.counter("SINK.k1", "EventDrainSuccessCount") == 500,
        timeout=60,
        what="every event at the collector",
    )
    wait_until_sync(lambda: _get(mp, "/health")[0] == 200, what="/health back to 200")
    assert _get(mp, "/health")[1]["problems"] == []


def test_health_reports_taildir_that_cannot_save_positions(agent_factory, tmp_path):
    import subprocess

    import pytest

    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "app.log").write_text("one\ntwo\n")
        conf = f"""
[agents.a1.sources.r1]
type = "taildir"
positionFile = "{ro / "pos.json"}"
filegroups.f1 = "{logs}/.*log"
writePosInterval = 100
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
"""
        agent = agent_factory(conf)

        def reported() -> bool:
            status, body = _get(agent.metrics_port, "/health")
            return status == 503 and any(
                p["component"] == "SOURCE.r1" and p["what"].startswith("cannot save positions")
                for p in body["problems"]
            )

        wait_until_sync(reported, what="/health naming the position file")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
