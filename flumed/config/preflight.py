"""Checks before start, as the user `flumed validate` runs as (the units' ExecStartPre).

Validation proper is pure; these checks touch the filesystem (and, with `check_ports`,
the network) so that a configuration that would fail at start fails at validate instead:
a spool directory that is missing or not writable, a file_roll / file channel / HDFS
directory that cannot be created, a position file in a read-only place, an unreadable TLS
or password file, and (`--check-ports`) a listening port already taken.

The keys checked are found by their Flume name in each component's flat keys (the table
below), so every component that uses one of these keys is covered; a component's Config
may add its own checks with a `preflight() -> list[str]` method.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from flumed.config.graph import AgentSpec, ComponentSpec
from flumed.config.keys import config_claims, port_of_claim

Check = Callable[[str], str | None]


def _nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def dir_readable_writable(path: str) -> str | None:
    """A directory the source reads files from and renames or deletes them in."""
    if not os.path.isdir(path):
        return f"{path} is not a directory" if os.path.exists(path) else f"{path} does not exist"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{path} is not readable by this user (uid {os.geteuid()})"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable by this user (uid {os.geteuid()}), or read-only"
    return None


def dir_creatable(path: str) -> str | None:
    """A directory the component writes into, created at start when missing."""
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is not a directory"
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        return f"{base} is not a directory"
    if not os.access(base, os.W_OK | os.X_OK):
        what = "cannot be created: " if base != os.path.abspath(path) else "is not writable: "
        return (
            f"{path} {what}{base} is not writable by this user (uid {os.geteuid()}), or read-only"
        )
    return None


def file_writable(path: str) -> str | None:
    """A file the component writes (a position file), created when missing."""
    path = os.path.expanduser(path)
    if os.path.exists(path):
        if os.path.isdir(path):
            return f"{path} is a directory"
        if not os.access(path, os.W_OK):
            return f"{path} is not writable by this user (uid {os.geteuid()}), or read-only"
        return None
    return dir_creatable(os.path.dirname(os.path.abspath(path)) or ".")


def file_readable(path: str) -> str | None:
    """A file read at start: TLS material, a password file."""
    if not os.path.isfile(path):
        return f"{path} does not exist" if not os.path.exists(path) else f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user (uid {os.geteuid()})"
    return None


def _local_hdfs_dir(value: str) -> str | None:
    """The fixed part of a local `hdfs.path` (before its first escape), or None (remote)."""
    if "://" in value and not value.startswith("file://"):
        return None
    path = value.removeprefix("file://")
    fixed = path.split("%", 1)[0]
    return os.path.dirname(fixed) if "%" in path else fixed


#: Flume key → the check for its value (comma-separated values are checked one by one).
PATH_KEYS: dict[str, Check] = {
    "spoolDir": dir_readable_writable,
    "positionFile": file_writable,
    "sink.directory": dir_creatable,
    "dataDirs": dir_creatable,
    "checkpointDir": dir_creatable,
    "backupCheckpointDir": dir_creatable,
    "trackerDir": dir_creatable,
    "deadLetter.path": file_writable,
    "keystore": file_readable,
    "certificate": file_readable,
    "key": file_readable,
    "truststore": file_readable,
    "ssl.truststore": file_readable,
    "ssl.keystore.location": file_readable,
    "ssl.truststore.location": file_readable,
    "kafka.producer.ssl.truststore.location": file_readable,
    "kafka.producer.ssl.keystore.location": file_readable,
    "kafka.consumer.ssl.truststore.location": file_readable,
    "kafka.consumer.ssl.keystore.location": file_readable,
    "passwordFile": file_readable,
    "keystore-password-file": file_readable,
    "connection.properties.file": file_readable,
}


def _component_checks(spec: ComponentSpec) -> Iterable[tuple[str, str]]:
    """(key, problem) for one component."""
    raw: dict[str, Any] = dict(spec.raw)
    for k, v in raw.items():
        if not isinstance(v, str) or not v.strip():
            continue
        check = PATH_KEYS.get(k)
        if k == "hdfs.path":
            local = _local_hdfs_dir(v)
            if local:
                problem = dir_creatable(local)
                if problem:
                    yield k, problem
            continue
        if check is None:
            continue
        values = [x.strip() for x in v.split(",")] if k in ("dataDirs", "checkpointDir") else [v]
        for value in values:
            problem = check(os.path.expanduser(value))
            if problem:
                yield k, problem
    own = getattr(spec.config, "preflight", None)
    if own is not None:
        for problem in own():
            yield "", problem


def _ports(spec: ComponentSpec) -> Iterable[tuple[str, str, int, int]]:
    """(key, bind address, port, socket type) of a listening component."""
    raw = dict(spec.raw)
    bind = str(raw.get("bind", raw.get("host", "0.0.0.0")))
    # The component's own port claims (config.keys.listen_claims): TCP or UDP as it
    # says, and never a port it connects to.
    for resource, key in config_claims(spec.config):
        found = port_of_claim(resource)
        if found is not None:
            transport, port = found
            yield key, bind, port, socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM


def try_bind(host: str, port: int, kind: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use"
            if e.errno == errno.EACCES:
                return f"port {port} on {host}: permission denied (ports < 1024 need a capability)"
            return f"cannot bind {host}:{port}: {e.strerror}"
    return None


def preflight(spec: AgentSpec, where: str, check_ports: bool = False) -> list[str]:
    """Every problem found, each naming file, agent, component and key."""
    problems: list[str] = []
    comps: list[tuple[str, ComponentSpec]] = [(f"source {n}", s) for n, s in spec.sources.items()]
    comps += [(f"channel {n}", c) for n, c in spec.channels.items()]
    comps += [(f"sink {n}", s) for n, s in spec.sinks.items()]
    for label, comp in comps:
        cwhere = f"{where}: agent {spec.name}: {label}"
        for key, problem in _component_checks(comp):
            problems.append(f"{cwhere}: key '{key}': {problem}" if key else f"{cwhere}: {problem}")
        if check_ports and label.startswith("source"):
            for key, host, port, kind in _ports(comp):
                bind_problem = try_bind(host, port, kind)
                if bind_problem:
                    problems.append(f"{cwhere}: key '{key}': {bind_problem}")
    return problems
