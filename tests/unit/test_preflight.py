"""`flumed validate` checks, as the user it runs as, what start would refuse: spool
directories, writable directories and position files (a read-only file system included),
readable TLS files, and with --check-ports the listening ports."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def validate(conf: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumed", "validate", "-f", str(conf), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def readonly(tmp_path: Path):
    """A read-only tmpfs holding a directory `existing` (the root user cannot write to it)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    (mnt / "existing").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def conf(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "a.toml"
    path.write_text(
        '[agents.a1.channels.c1]\ntype = "memory"\n' + body.replace("\n    ", "\n").strip() + "\n"
    )
    return path


def test_good_configuration_passes(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    c = conf(
        tmp_path,
        f"""
    [agents.a1.sources.r1]
    type = "spooldir"
    spoolDir = "{spool}"
    channels = ["c1"]
    [agents.a1.sinks.k1]
    type = "file_roll"
    "sink.directory" = "{tmp_path / "out" / "new"}"
    channel = "c1"
    """,
    )
    r = validate(c)
    assert r.returncode == 0, r.stderr


def test_missing_spool_directory_and_unreadable_tls_file(tmp_path):
    c = conf(
        tmp_path,
        f"""
    [agents.a1.sources.r1]
    type = "spooldir"
    spoolDir = "{tmp_path / "nope"}"
    channels = ["c1"]
    [agents.a1.sources.r2]
    type = "syslogtcp"
    host = "127.0.0.1"
    port = 0
    ssl = true
    certificate = "{tmp_path / "missing.pem"}"
    key = "{tmp_path / "missing.key"}"
    channels = ["c1"]
    [agents.a1.sinks.k1]
    type = "null"
    channel = "c1"
    """,
    )
    r = validate(c)
    assert r.returncode == 1
    assert (
        f"a.toml: agent a1: source r1: key 'spoolDir': {tmp_path / 'nope'} does not exist"
        in r.stderr
    )
    assert f"source r2: key 'certificate': {tmp_path / 'missing.pem'} does not exist" in r.stderr
    assert f"source r2: key 'key': {tmp_path / 'missing.key'} does not exist" in r.stderr


def test_read_only_file_system(tmp_path, readonly):
    c = conf(
        tmp_path,
        f"""
    [agents.a1.sources.r1]
    type = "taildir"
    positionFile = "{readonly / "existing" / "pos.json"}"
    filegroups.f1 = "{tmp_path}/.*log"
    channels = ["c1"]
    [agents.a1.channels.c2]
    type = "file"
    dataDirs = "{readonly / "data"}"
    [agents.a1.sinks.k1]
    type = "file_roll"
    "sink.directory" = "{readonly / "existing"}"
    channel = "c1"
    [agents.a1.sinks.k2]
    type = "null"
    channel = "c2"
    """,
    )
    r = validate(c)
    assert r.returncode == 1
    err = r.stderr
    assert "source r1: key 'positionFile'" in err and "read-only" in err
    assert "channel c2: key 'dataDirs'" in err and "cannot be created" in err
    assert "sink k1: key 'sink.directory'" in err


def test_check_ports_finds_a_taken_port(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        c = conf(
            tmp_path,
            f"""
        [agents.a1.sources.r1]
        type = "netcat"
        bind = "127.0.0.1"
        port = {port}
        channels = ["c1"]
        [agents.a1.sinks.k1]
        type = "null"
        channel = "c1"
        """,
        )
        assert validate(c).returncode == 0  # ports are not bound without the flag
        r = validate(c, "--check-ports")
    assert r.returncode == 1
    assert f"source r1: key 'port': port {port} on 127.0.0.1 is already in use" in r.stderr
