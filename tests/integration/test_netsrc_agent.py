"""The network sources inside a real `flumed agent` process: util-linux `logger` and curl
as the senders, the logger sink's log as the receiver, the metrics endpoint as counters."""

from __future__ import annotations

import ast
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.pki import Pki
from tests.util import free_port, wait_until_sync

EVENT = re.compile(r"Event: \{ headers:(\{.*?\}) body: ")


def logged_events(log: str) -> list[tuple[dict[str, str], str]]:
    """(headers, log line) of every event the logger sink wrote."""
    out = []
    for line in log.splitlines():
        m = EVENT.search(line)
        if m:
            out.append((ast.literal_eval(m.group(1)), line))
    return out


def wait_events(agent, n: int) -> list[tuple[dict[str, str], str]]:  # type: ignore[no-untyped-def]
    wait_until_sync(lambda: len(logged_events(agent.log())) >= n, 30, f"{n} logged events")
    return logged_events(agent.log())


@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger absent")
def test_syslog_sources_in_an_agent(agent_factory) -> None:  # type: ignore[no-untyped-def]
    tcp, udp, mp1, mp2 = free_port(), free_port(), free_port(), free_port()
    agent = agent_factory(f"""
[agents.a1.sources.tcp]
type = "syslogtcp"
host = "127.0.0.1"
port = {tcp}
channels = ["c1"]
[agents.a1.sources.udp]
type = "syslogudp"
host = "127.0.0.1"
port = {udp}
channels = ["c1"]
[agents.a1.sources.mp]
type = "multiport_syslogtcp"
host = "127.0.0.1"
ports = [{mp1}, {mp2}]
portHeader = "port"
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
maxBytesToLog = 1000
""")
    sends = [
        ["--tcp", "-P", str(tcp), "--rfc5424", "--msgid", "ID1", "over tcp"],
        ["--tcp", "-P", str(tcp), "--rfc3164", "over tcp 3164"],
        ["--udp", "-P", str(udp), "--rfc5424", "over udp"],
        ["--tcp", "-P", str(mp2), "--rfc5424", "--octet-count", "over multiport"],
    ]
    for args in sends:
        subprocess.run(["logger", "-n", "127.0.0.1", "-t", "agt", *args], check=True)
    with socket.create_connection(("127.0.0.1", tcp)) as s:
        s.sendall(b"this is not syslog\n")
    events = wait_events(agent, len(sends) + 1)
    tcp5424 = next(h for h, line in events if "over tcp }" in line)
    assert tcp5424["msgid"] == "ID1" and tcp5424["version"] == "1"
    assert tcp5424["app-name"] == "agt" and tcp5424["priority"] == "13"
    tcp3164 = next(h for h, line in events if "over tcp 3164" in line)
    assert "version" not in tcp3164 and tcp3164["priority"] == "13"
    overudp = next(h for h, line in events if "over udp" in line)
    assert overudp["version"] == "1" and overudp["app-name"] == "agt"
    mp = next(h for h, line in events if "over multiport" in line)
    assert mp["Priority"] == "13" and mp["Version"] == "1" and mp["port"] == str(mp2)
    bad = next(h for h, line in events if "this is not syslog" in line)
    assert bad["flume.syslog.status"] == "Invalid"
    assert agent.counter("SOURCE.tcp", "EventReadFail") == 1
    assert agent.counter("SOURCE.tcp", "EventAcceptedCount") == 3
    assert agent.counter("SOURCE.udp", "EventAcceptedCount") == 1
    assert agent.counter("SOURCE.mp", "EventAcceptedCount") == 1
    assert agent.terminate() == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl absent")
def test_http_source_in_an_agent_with_curl(agent_factory, tmp_path: Path, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    plain, tls = free_port(), free_port()
    agent = agent_factory(f"""
[agents.a1.sources.h1]
type = "http"
bind = "127.0.0.1"
port = {plain}
channels = ["c1"]
[agents.a1.sources.h2]
type = "http"
bind = "127.0.0.1"
port = {tls}
ssl = true
certificate = "{pki.server}"
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
maxBytesToLog = 1000
""")

    def curl(url: str, data: str, *extra: str) -> tuple[int, str]:
        out = subprocess.run(
            ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H",
             "Content-Type: application/json", "--data-binary", data, *extra, url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        body, _, code = out.stdout.rpartition("\n")
        return int(code), body

    good = json.dumps([{"headers": {"k": "v1"}, "body": "from curl"}, {"body": "second"}])
    assert curl(f"http://127.0.0.1:{plain}/", good) == (200, "")
    code, text = curl(f"http://127.0.0.1:{plain}/", "[{oops")
    assert code == 400 and "invalid JSON" in text
    tls_batch = json.dumps([{"headers": {"k": "v2"}, "body": "over https"}])
    assert curl(f"https://127.0.0.1:{tls}/", tls_batch, "--cacert", pki.ca) == (
        200, "",
    )  # fmt: skip
    events = wait_events(agent, 3)
    assert sorted(h.get("k", "") for h, _ in events) == ["", "v1", "v2"]
    assert agent.counter("SOURCE.h1", "EventReadFail") == 1
    assert agent.counter("SOURCE.h1", "EventAcceptedCount") == 2
    assert agent.counter("SOURCE.h2", "EventAcceptedCount") == 1
    assert agent.terminate() == 0
