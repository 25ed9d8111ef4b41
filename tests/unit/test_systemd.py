"""systemd units parse and verify; the agent speaks the notify protocol (READY, WATCHDOG)."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.util import free_port

ROOT = Path(__file__).resolve().parents[2]
UNITS = ["flumed.service", "flumed@.service"]
FLUMED = shutil.which("flumed", path=str(Path(sys.executable).parent))


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (keys may repeat, as ExecReload does)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        k, _, v = line.partition("=")
        out[section].setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_unit_has_the_required_settings(unit: str):
    s = unit_sections(ROOT / "systemd" / unit)
    svc = s["Service"]
    assert svc["Type"] == ["notify"]
    assert svc["ExecStartPre"][0].split()[1] == "validate"
    assert svc["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    for k, v in {
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
    }.items():
        assert svc[k] == [v], k
    assert svc["StateDirectory"][0].startswith("flumed")
    assert svc["LogsDirectory"][0].startswith("flumed")
    assert s["Install"]["WantedBy"] == ["multi-user.target"]
    # The stdlib parser reads it too (no stray syntax), keys repeated or not.
    configparser.ConfigParser(strict=False, interpolation=None).read_string(
        (ROOT / "systemd" / unit).read_text()
    )


def test_single_and_template_units_use_their_config_files():
    single = unit_sections(ROOT / "systemd" / "flumed.service")["Service"]
    assert "-f /etc/flumed/flumed.toml -n ${FLUMED_AGENT}" in single["ExecStart"][0]
    assert any(e.startswith("FLUMED_AGENT=") for e in single["Environment"])
    template = unit_sections(ROOT / "systemd" / "flumed@.service")["Service"]
    assert "-f /etc/flumed/%i.toml -n %i" in template["ExecStart"][0]


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """`make install-systemd` into a staging tree, with this checkout's flumed."""
    assert FLUMED, "the flumed command is not installed next to this Python"
    subprocess.run(
        ["make", "-s", "install-systemd", f"DESTDIR={tmp_path}", f"FLUMED_BIN={FLUMED}"],
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    return tmp_path


def test_install_systemd_target(installed: Path):
    units = installed / "etc/systemd/system"
    assert sorted(p.name for p in units.iterdir()) == sorted(UNITS)
    assert (installed / "etc/flumed/flumed.toml").read_text() == (
        ROOT / "conf/single-agent.toml"
    ).read_text()
    assert "FLUMED_AGENT=a1" in (installed / "etc/default/flumed").read_text()
    svc = unit_sections(units / "flumed.service")["Service"]
    assert svc["ExecStart"][0].startswith(f"{FLUMED} agent ")
    # The example config it installs is valid for the agent the unit names.
    r = subprocess.run(
        [FLUMED, "validate", "-f", str(installed / "etc/flumed/flumed.toml"), "-n", "a1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine"
)
def test_units_pass_systemd_analyze_verify(installed: Path, tmp_path: Path):
    units = installed / "etc/systemd/system"
    # A template is verified through an instance of it.
    shutil.copy(units / "flumed@.service", units / "flumed@web.service")
    for name in ["flumed.service", "flumed@web.service"]:
        r = subprocess.run(
            ["systemd-analyze", "verify", str(units / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # verify exits 0 on unknown keys and bad values but prints them: none allowed.
        problems = [line for line in r.stderr.splitlines() if name in line]
        assert r.returncode == 0 and not problems, r.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine"
)
def test_verify_catches_a_bad_unit(installed: Path):
    """The check above can fail: a misspelt key is reported."""
    units = installed / "etc/systemd/system"
    bad = units / "bad.service"
    bad.write_text((units / "flumed.service").read_text().replace("ProtectHome=", "ProtectHomes="))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key" in r.stderr and "ProtectHomes" in r.stderr


# -- the notify protocol, from a real agent process -------------------------------------

AGENT = """
[agents.a1.sources.r1]
type = "seq"
totalEvents = 10
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
"""


class Notified:
    """A notify socket like systemd's, and the agent started under it."""

    def __init__(self, tmp_path: Path, watchdog_pid: str | None) -> None:
        self.path = str(tmp_path / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        conf = tmp_path / "agent.toml"
        conf.write_text(AGENT)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHDOG_", "NOTIFY_"))}
        env.update(NOTIFY_SOCKET=self.path, WATCHDOG_USEC="200000")  # pings every 0.1 s
        cmd = f'exec "$0" -m flumed agent -f {conf} -n a1 --metrics-port {free_port()}'
        cmd += " --metrics-bind 127.0.0.1"
        if watchdog_pid == "self":
            cmd = "WATCHDOG_PID=$$ export WATCHDOG_PID; " + cmd  # exec keeps the pid
        elif watchdog_pid is not None:
            env["WATCHDOG_PID"] = watchdog_pid
        self.log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["sh", "-c", cmd, sys.executable], env=env, stdout=self.log, stderr=self.log
        )
        self.messages: list[str] = []

    def read_until(self, message: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.messages.count(message) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {count}x {message} in {timeout}s: {self.messages}"
            self.sock.settimeout(min(remaining, 0.5))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                assert self.proc.poll() is None or message == "STOPPING=1", "agent exited"
                continue
            self.messages.extend(data.decode().split("\n"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.sock.close()
        self.log.close()


@pytest.fixture
def notified(tmp_path: Path):
    made: list[Notified] = []

    def make(watchdog_pid: str | None) -> Notified:
        n = Notified(tmp_path, watchdog_pid)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


@pytest.mark.parametrize("watchdog_pid", [None, "self"], ids=["pid-unset", "pid-is-agent"])
def test_ready_and_watchdog_notifications(notified, watchdog_pid: str | None):
    agent = notified(watchdog_pid)
    agent.read_until("READY=1")
    agent.read_until("WATCHDOG=1", count=3)  # keeps pinging while it runs
    assert agent.messages.index("READY=1") < agent.messages.index("WATCHDOG=1")
    agent.proc.send_signal(signal.SIGTERM)
    agent.read_until("STOPPING=1")
    assert agent.proc.wait(60) == 0


def test_no_watchdog_pings_when_watchdog_pid_is_another_process(notified):
    agent = notified(str(os.getpid()))
    agent.read_until("READY=1")
    # The first ping would be sent right after READY=1, before a signal is handled.
    agent.proc.send_signal(signal.SIGTERM)
    agent.read_until("STOPPING=1")
    assert agent.proc.wait(60) == 0
    assert "WATCHDOG=1" not in agent.messages
