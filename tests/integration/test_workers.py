"""`flumed agent --workers 2` as real processes: the supervisor, two workers sharing a
port with SO_REUSEPORT, per-worker state, restarts after SIGKILL, draining on SIGTERM,
and the supervisor's summed metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import urllib.request
from pathlib import Path

from tests.util import AckingSender, AgentProcess, free_port, wait_until_sync


def conf(tmp: Path, port: int, channel: str, source: str = "netcat", workers: str = "") -> Path:
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    if channel == "file":
        ch = f'type = "file"\ndataDirs = "{tmp}/fc"\ntransactionCapacity = 1000'
    else:
        ch = 'type = "memory"\ncapacity = 100000\ntransactionCapacity = 10000'
    if source == "netcat":
        src = f'type = "netcat"\nbind = "127.0.0.1"\nport = {port}\nack-every-event = true'
    else:
        src = f'type = "syslogtcp"\nhost = "127.0.0.1"\nport = {port}'
    path = tmp / "a.toml"
    path.write_text(f"""
[agents.a1]
{workers}
[agents.a1.sources.r1]
{src}
channels = ["c1"]
[agents.a1.channels.c1]
{ch}
[agents.a1.sinks.k1]
type = "file_roll"
channel = "c1"
"sink.directory" = "{out}"
"sink.rollInterval" = 0
"sink.batchSize" = 1000
""")
    return path


def workers_info(agent: AgentProcess) -> dict[str, dict]:
    url = f"http://127.0.0.1:{agent.metrics_port}/metrics/workers"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def output_lines(tmp: Path) -> list[bytes]:
    lines: list[bytes] = []
    for p in sorted((tmp / "out").iterdir()):
        lines += p.read_bytes().splitlines()
    return lines


def send_connections(port: int, conns: int, per_conn: int) -> None:
    """`conns` connections, each its own numbered syslog lines."""
    for c in range(conns):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"".join(b"<13>1 - h app - - - %d\n" % (c * per_conn + i) for i in range(per_conn))
            )


def test_connections_spread_over_workers_and_are_counted_once(tmp_path: Path) -> None:
    port = free_port()
    agent = AgentProcess(conf(tmp_path, port, "memory", "syslogtcp", "workers = 2")).start()
    try:
        conns, per = 60, 200
        n = conns * per
        send_connections(port, conns, per)
        wait_until_sync(
            lambda: agent.counter("SINK.k1", "EventDrainSuccessCount") >= n, 60, "all drained"
        )
        total = agent.metrics()
        info = workers_info(agent)
        per_worker = [int(w["metrics"]["SOURCE.r1"]["EventAcceptedCount"]) for w in info.values()]
        assert len(per_worker) == 2 and all(c > 0 for c in per_worker), per_worker
        assert sum(per_worker) == n == int(total["SOURCE.r1"]["EventAcceptedCount"])
        assert int(total["SINK.k1"]["EventDrainSuccessCount"]) == n
        assert int(total["CHANNEL.c1"]["ChannelCapacity"]) == 2 * 100000
        assert agent.terminate() == 0
        # Each worker wrote its own file (worker 1's named worker1-...); every message once.
        names = [p.name for p in (tmp_path / "out").iterdir()]
        assert any(x.startswith("worker1-") for x in names), names
        assert any(not x.startswith("worker") for x in names), names
        got = sorted(int(ln.rsplit(b" ", 1)[1]) for ln in output_lines(tmp_path))
        assert got == list(range(n))
    finally:
        agent.close()


def test_workers_key_in_properties_and_single_worker_sources(tmp_path: Path) -> None:
    # `a1.workers` in a properties file; seq (cannot be split) runs in worker 0 only.
    port = free_port()
    props = tmp_path / "a.properties"
    props.write_text(
        "a1.workers = 2\na1.sources = s1 r1\na1.channels = c1\na1.sinks = k1\n"
        "a1.sources.s1.type = seq\na1.sources.s1.totalEvents = 500\na1.sources.s1.channels = c1\n"
        "a1.sources.r1.type = netcat\na1.sources.r1.bind = 127.0.0.1\n"
        f"a1.sources.r1.port = {port}\na1.sources.r1.channels = c1\n"
        "a1.channels.c1.type = memory\na1.sinks.k1.type = null\na1.sinks.k1.channel = c1\n"
    )
    agent = AgentProcess(props).start()
    try:
        wait_until_sync(
            lambda: agent.counter("SINK.k1", "EventDrainSuccessCount") >= 500, 60, "seq drained"
        )
        info = workers_info(agent)
        assert "SOURCE.s1" in info["0"]["metrics"] and "SOURCE.s1" not in info["1"]["metrics"]
        assert "SOURCE.r1" in info["1"]["metrics"]
        assert agent.counter("SOURCE.s1", "EventAcceptedCount") == 500
        assert agent.terminate() == 0
    finally:
        agent.close()


def test_sigkilled_worker_is_restarted_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    port = free_port()
    agent = AgentProcess(conf(tmp_path, port, "file", "netcat", "workers = 2"))
    agent.extra_args = ["--workers", "2"]  # the flag, not the key, this time
    path = agent.conf
    path.write_text(path.read_text().replace("workers = 2", ""))
    agent.start(timeout=60)
    try:
        senders = [AckingSender(port, window=100) for _ in range(8)]
        per = 3000
        threads = [
            threading.Thread(target=s.send_range, args=(i * per, (i + 1) * per, 180))
            for i, s in enumerate(senders)
        ]
        for t in threads:
            t.start()
        wait_until_sync(lambda: sum(s.acked for s in senders) > 4000, 60, "traffic flowing")
        victim = workers_info(agent)["1"]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_until_sync(
            lambda: (
                workers_info(agent)["1"]["pid"] not in (None, victim)
                and workers_info(agent)["1"]["ready"]
            ),
            60,
            "worker 1 restarted",
        )
        for t in threads:
            t.join(200)
        assert sum(s.acked for s in senders) == 8 * per
        assert workers_info(agent)["1"]["restarts"] == 1
        # Every acknowledged line reaches the output; the restarted worker replays its
        # file channel (duplicates bounded by what was in flight).
        want = set(range(8 * per))
        wait_until_sync(
            lambda: want <= {int(x) for x in output_lines(tmp_path)}, 120, "all lines written"
        )
        got = output_lines(tmp_path)
        assert len(got) - len(want) <= 8 * 100 + 1000
        assert agent.terminate() == 0
        # Worker 1's file channel lives in its own directory.
        assert (tmp_path / "fc").is_dir() and (tmp_path / "fc-worker1").is_dir()
    finally:
        agent.close()


def test_sigterm_drains_every_worker(tmp_path: Path) -> None:
    port = free_port()
    agent = AgentProcess(conf(tmp_path, port, "memory", "syslogtcp", "workers = 2")).start()
    try:
        conns, per = 40, 500
        send_connections(port, conns, per)
        wait_until_sync(
            lambda: agent.counter("SOURCE.r1", "EventAcceptedCount") >= conns * per,
            60,
            "all accepted",
        )
        # Stop at once: what the channels hold is drained to the files before exit.
        assert agent.terminate() == 0
        assert len(output_lines(tmp_path)) == conns * per
    finally:
        agent.close()
