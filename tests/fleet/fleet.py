"""A fleet of real flumed agents on namespace "hosts", a Kafka broker, feeders, a checker.

Topology (one /24 that exists only inside the test's namespaces):

    e1..e6   taildir (growing app.log) + syslogtcp (fed by util-linux `logger`)
             -> file channel -> avro sinks c1, c2 in a load_balance group (backoff)
    c1, c2   avro source (+ http source) -> file channel -> kafka sink
    kafka    tansu (memory storage), topic `fleet`
    ops      the checker (aiokafka consumer) and the clients of the send/http test

Every event body is `<edge> <stream> <n>`: stream `f` is a line of the edge's log file,
`s` a syslog message; `n` counts from 0 per edge and stream. The checker reads the topic
from the start for the whole test and counts every (edge, stream, n); `Fleet.verdict()`
says what was lost, duplicated or never sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fleet import netns
from tests.fleet.netns import NetnsLoop, in_netns, ip
from tests.integration.avro_helpers import make_pki
from tests.integration.kafka_broker import TansuBroker, create_topics
from tests.util import AgentProcess, free_port, wait_until_sync

SUBNET = "10.213.0"
TOPIC = "fleet"
#: Events per batch on every hop (edge avro sinks, collector kafka sinks, taildir).
BATCH = 100
#: Lines each edge writes to its log file, and messages it sends through `logger`, per tick.
PER_TICK = 3
TICK = 0.1
#: Generous: the machine is shared, and a slow condition must not fail CI.
WAIT = 180.0

Key = tuple[str, str]  # (source, stream), e.g. ("e3", "f")


def _toml(table: str, keys: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"[{table}]\n" + "".join(f'"{k}" = {value(v)}\n' for k, v in keys.items()) + "\n"


@dataclass
class Host:
    """A namespace with one veth to the switch (`port` is the switch's end)."""

    role: str
    ns: str
    addr: str
    port: str

    @property
    def exec(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]


class Network:
    """A switch namespace with a bridge, and hosts plugged into it."""

    def __init__(self) -> None:
        self.base = f"{netns.PREFIX}{os.getpid()}"
        self.switch = f"{self.base}-sw"
        self.bridge = f"flbr{os.getpid()}"[:15]
        self.hosts: dict[str, Host] = {}
        self.made: list[str] = []

    def start(self) -> Network:
        netns.sweep()
        self._add_ns(self.switch)
        ip("-n", self.switch, "link", "add", self.bridge, "type", "bridge")
        ip("-n", self.switch, "link", "set", self.bridge, "up")
        return self

    def _add_ns(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.made.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def add(self, role: str, last_octet: int) -> Host:
        h = Host(role, f"{self.base}-{role}", f"{SUBNET}.{last_octet}", f"p-{role}")
        self._add_ns(h.ns)
        ip("-n", self.switch, "link", "add", h.port, "type", "veth", "peer", "eth0", "netns", h.ns)
        ip("-n", self.switch, "link", "set", h.port, "master", self.bridge)
        ip("-n", self.switch, "link", "set", h.port, "up")
        ip("-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
        ip("-n", h.ns, "link", "set", "eth0", "up")
        self.hosts[role] = h
        return h

    def set_link(self, role: str, up: bool) -> None:
        """Plug or unplug a host at the switch: a partition, not a reset (no RST, no FIN)."""
        ip("-n", self.switch, "link", "set", self.hosts[role].port, "up" if up else "down")

    def close(self) -> None:
        for ns in reversed(self.made):
            netns.delete(ns)
        self.made.clear()


class Checker:
    """Consumes the topic from the beginning, in the ops namespace, for the whole test."""

    BODY = re.compile(rb"\b([a-z]\d*) ([a-z]) (\d+)\b")

    def __init__(self, loop: NetnsLoop, bootstrap: str) -> None:
        self.loop = loop
        self.bootstrap = bootstrap
        self.lock = threading.Lock()
        self.counts: dict[Key, collections.Counter[int]] = collections.defaultdict(
            collections.Counter
        )
        #: Per key, every n below it was seen (so a `has` check is cheap).
        self.prefix: dict[Key, int] = collections.defaultdict(int)
        self.records = 0
        self.unparsed: list[bytes] = []
        self._stop = asyncio.Event()
        self._task: Any = None

    def start(self) -> Checker:
        self._task = self.loop.submit(self._run())
        return self

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._stop = asyncio.Event()
        consumer = AIOKafkaConsumer(
            TOPIC,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=2000,
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=300, max_records=20_000)
                self._count([r.value for recs in batch.values() for r in recs])
        finally:
            await consumer.stop()

    def _count(self, values: list[bytes]) -> None:
        with self.lock:
            for v in values:
                self.records += 1
                m = self.BODY.search(v)
                if m is None:
                    self.unparsed.append(v)
                    continue
                k = (m.group(1).decode(), m.group(2).decode())
                c = self.counts[k]
                c[int(m.group(3))] += 1
                p = self.prefix[k]
                while p in c:
                    p += 1
                self.prefix[k] = p

    def _alive(self) -> None:
        """Raises what stopped the consumer, if it stopped."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise AssertionError("the checker's consumer stopped")

    def has(self, sent: dict[Key, int]) -> bool:
        """Whether every event counted in `sent` (n below the count) was seen."""
        self._alive()
        with self.lock:
            return all(self.prefix[k] >= n for k, n in sent.items())

    def missing(self, sent: dict[Key, int]) -> dict[Key, str]:
        """Per stream short of `sent`: how many are missing, and the first few."""
        with self.lock:
            out = {}
            for k, n in sent.items():
                c = self.counts[k]
                gone = [x for x in range(self.prefix[k], n) if x not in c]
                if gone:
                    out[k] = f"{len(gone)} of {n}, e.g. {gone[:5]}"
            return out

    def seen(self, k: Key) -> int:
        self._alive()
        with self.lock:
            return len(self.counts[k])

    def stop(self) -> None:
        self.loop.loop.call_soon_threadsafe(self._stop.set)
        if self._task is not None:
            self._task.result(30)


class Feeders:
    """Numbered events into every edge: lines appended to its log file, and messages
    written to a `logger --tcp` running inside its namespace. One thread paces them
    (PER_TICK per stream every TICK seconds: the stream's rate, not a wait)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.sent: dict[Key, int] = collections.defaultdict(int)
        self.lock = threading.Lock()
        self.files = {e: open(fleet.edge_log(e), "ab") for e in fleet.edges}  # noqa: SIM115
        self.loggers: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()  # edges whose syslog stream is held
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeders", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Feeders:
        for e in self.fleet.edges:
            self._start_logger(e)
        self._thread.start()
        return self

    def _start_logger(self, e: str) -> None:
        h = self.fleet.net.hosts[e]
        port = self.fleet.syslog_ports[e]
        argv = [*h.exec, "logger", "--tcp", "-n", "127.0.0.1", "-P", str(port), "-t", "fleet"]
        self.loggers[e] = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def _stop_logger(self, e: str) -> None:
        p = self.loggers.pop(e)
        assert p.stdin is not None
        p.stdin.close()
        rc = p.wait(60)
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        if p.stderr:
            p.stderr.close()
        if rc != 0:
            raise AssertionError(f"logger for {e} exited with {rc}: {err}")

    def _run(self) -> None:
        try:
            while not self._stop.wait(TICK):
                with self.lock:
                    for e in self.fleet.edges:
                        self._write(e, "f", PER_TICK)
                        if e not in self.paused:
                            self._write(e, "s", PER_TICK)
        except BaseException as exc:
            self.error = exc

    def _write(self, e: str, stream: str, count: int) -> None:
        k = (e, stream)
        n0 = self.sent[k]
        data = b"".join(
            b"%s %s %d\n" % (e.encode(), stream.encode(), n) for n in range(n0, n0 + count)
        )
        if stream == "f":
            f = self.files[e]
            f.write(data)
            f.flush()
        else:
            p = self.loggers[e]
            assert p.stdin is not None
            p.stdin.write(data)
            p.stdin.flush()
        self.sent[k] = n0 + count

    def burst(self, e: str, lines: int) -> None:
        """Append `lines` lines to the edge's file at once (a file to be mid-way through)."""
        with self.lock:
            self._write(e, "f", lines)

    def pause_syslog(self, e: str) -> None:
        """Hold the syslog stream of edge `e`; its logger sends what it has and exits."""
        with self.lock:
            self.paused.add(e)
            self._stop_logger(e)

    def resume_syslog(self, e: str) -> None:
        with self.lock:
            self._start_logger(e)
            self.paused.discard(e)

    def snapshot(self) -> dict[Key, int]:
        with self.lock:
            if self.error is not None:
                raise AssertionError(f"the feeders failed: {self.error!r}")
            return dict(self.sent)

    def stop(self) -> dict[Key, int]:
        """Stop feeding; every logger has handed its messages to its edge. What was sent."""
        self._stop.set()
        self._thread.join(30)
        with self.lock:
            for e in list(self.loggers):
                self._stop_logger(e)
            for f in self.files.values():
                f.close()
        return self.snapshot()

    def kill(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for p in self.loggers.values():
            with contextlib.suppress(OSError):
                p.kill()
            p.wait(30)
            for s in (p.stdin, p.stderr):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()
        for f in self.files.values():
            f.close()


@dataclass
class Verdict:
    lost: dict[Key, int] = field(default_factory=dict)
    unexpected: dict[Key, int] = field(default_factory=dict)
    dups: dict[str, int] = field(default_factory=dict)  # per source (edge)
    total: int = 0


class Fleet:
    """Build with `Fleet(tmp, tls=...)`, then `start()`; `close()` always (a fixture does)."""

    def __init__(self, tmp: Path, edges: int = 6, collectors: int = 2, tls: bool = False) -> None:
        self.tmp = tmp
        self.edges = [f"e{i}" for i in range(1, edges + 1)]
        self.collectors = [f"c{i}" for i in range(1, collectors + 1)]
        self.tls = tls
        self.net = Network()
        self.agents: dict[str, AgentProcess] = {}
        self.broker: TansuBroker | None = None
        self.ops: NetnsLoop | None = None
        self.checker: Checker | None = None
        self.feeders: Feeders | None = None
        self.avro_port = free_port()
        self.http_port = free_port()
        self.kafka_port = free_port()
        self.syslog_ports = {e: free_port() for e in self.edges}
        self.pki = None

    # -- layout ----------------------------------------------------------------------

    def addr(self, role: str) -> str:
        return self.net.hosts[role].addr

    @property
    def bootstrap(self) -> str:
        return f"{self.addr('kafka')}:{self.kafka_port}"

    def edge_log(self, e: str) -> Path:
        return self.tmp / e / "logs" / "app.log"

    def _channel(self, role: str) -> dict[str, Any]:
        # No fsync: processes are killed here, not the machine; the page cache outlives them.
        return {
            "type": "file",
            "dataDirs": str(self.tmp / role / "channel"),
            "capacity": 200_000,
            "transactionCapacity": 1000,
            "fsyncPerTransaction": False,
        }

    def edge_conf(self, e: str) -> str:
        d = self.tmp / e
        (d / "logs").mkdir(parents=True, exist_ok=True)
        a = "agents.edge"
        text = _toml(
            f"{a}.sources.tail",
            {
                "type": "taildir",
                "positionFile": str(d / "taildir.json"),
                "filegroups.app": str(d / "logs") + r"/.*\.log",
                "batchSize": BATCH,
                # A crash re-reads what was read after the last position write: keep it short.
                "writePosInterval": 100,
                "channels": ["durable"],
            },
        )
        text += _toml(
            f"{a}.sources.syslog",
            {
                "type": "syslogtcp",
                "host": "127.0.0.1",
                "port": self.syslog_ports[e],
                "channels": ["durable"],
            },
        )
        text += _toml(f"{a}.channels.durable", self._channel(e))
        for c in self.collectors:
            sink: dict[str, Any] = {
                "type": "avro",
                "channel": "durable",
                "hostname": self.addr(c),
                "port": self.avro_port,
                "batch-size": BATCH,
                "connect-timeout": 3000,
                "request-timeout": 10000,
            }
            if self.tls:
                assert self.pki is not None
                sink |= {"ssl": True, "truststore": self.pki.ca}
            text += _toml(f"{a}.sinks.{c}", sink)
        text += _toml(f"{a}.sinkgroups.spread", {"sinks": self.collectors})
        text += _toml(
            f"{a}.sinkgroups.spread.processor",
            {
                "type": "load_balance",
                "selector": "round_robin",
                "backoff": True,
                "selector.maxTimeOut": 5000,
            },
        )
        return text

    def collector_conf(self, c: str) -> str:
        a = "agents.collector"
        source: dict[str, Any] = {
            "type": "avro",
            "bind": self.addr(c),
            "port": self.avro_port,
            "channels": ["buffer"],
        }
        if self.tls:
            assert self.pki is not None
            source |= {"ssl": True, "certificate": self.pki.chain, "key": self.pki.key}
        text = _toml(f"{a}.sources.from_edges", source)
        text += _toml(
            f"{a}.sources.http",
            {"type": "http", "bind": self.addr(c), "port": self.http_port, "channels": ["buffer"]},
        )
        text += _toml(f"{a}.channels.buffer", self._channel(c))
        text += _toml(
            f"{a}.sinks.kafka",
            {
                "type": "kafka",
                "channel": "buffer",
                "kafka.bootstrap.servers": self.bootstrap,
                "kafka.topic": TOPIC,
                "flumeBatchSize": BATCH,
                "kafka.producer.acks": "all",
                "kafka.producer.linger.ms": 5,
            },
        )
        return text

    # -- life --------------------------------------------------------------------------

    def start(self) -> Fleet:
        self.net.start()
        self.net.add("kafka", 2)
        self.net.add("ops", 3)
        for i, c in enumerate(self.collectors, 1):
            self.net.add(c, 10 + i)
        for i, e in enumerate(self.edges, 1):
            self.net.add(e, 20 + i)
        if self.tls:
            self.pki = make_pki(self.tmp, *(self.addr(c) for c in self.collectors))
        k = self.net.hosts["kafka"]
        (self.tmp / "kafka").mkdir()
        self.broker = TansuBroker(
            self.tmp / "kafka", port=self.kafka_port, host=k.addr, wrap=k.exec
        )
        in_netns(k.ns, self.broker.start)
        self.ops = NetnsLoop(self.net.hosts["ops"].ns).start()
        self.ops.call(create_topics(self.bootstrap, {TOPIC: 3}))
        self.checker = Checker(self.ops, self.bootstrap).start()
        # Collectors first, so that the edges find them at once (no start-up backoff).
        for tier in (self.collectors, self.edges):
            for role in tier:
                self._agent(role).start(wait=False)
            for role in tier:
                self.agents[role].wait_notify("READY=1", WAIT)
        self.feeders = Feeders(self).start()
        return self

    def _agent(self, role: str) -> AgentProcess:
        conf = self.tmp / role / "agent.toml"
        conf.parent.mkdir(parents=True, exist_ok=True)
        is_edge = role in self.edges
        conf.write_text(self.edge_conf(role) if is_edge else self.collector_conf(role))
        p = AgentProcess(
            conf, name="edge" if is_edge else "collector", wrap=self.net.hosts[role].exec
        )
        self.agents[role] = p
        return p

    def restart(self, role: str) -> AgentProcess:
        """Start the agent of `role` again (same config, same channel) and wait for READY."""
        p = self.agents[role]
        p.kill()  # if still running
        return p.start(timeout=WAIT)

    def metrics(self, role: str) -> dict[str, dict[str, str]]:
        p = self.agents[role]
        return in_netns(self.net.hosts[role].ns, p.metrics)

    def counter(self, role: str, component: str, name: str) -> int:
        return int(float(self.metrics(role)[component][name]))

    def total(self, roles: Iterable[str], component: str, *names: str) -> int:
        """A sum of counters over agents (e.g. every edge's failures towards c1)."""
        out = 0
        for r in roles:
            m = self.metrics(r)[component]
            out += sum(int(float(m[n])) for n in names)
        return out

    def received(self, c: str) -> int:
        """Events collector `c`'s avro source took (0 if it is not up)."""
        return self.counter(c, "SOURCE.from_edges", "EventAcceptedCount")

    def diagnose(self) -> str:
        """What a failed test leaves to read: the feeders, the checker, each agent's log."""
        out = [f"fleet under {self.tmp}"]
        if self.feeders is not None:
            out.append(f"feeders: error={self.feeders.error!r}, sent={dict(self.feeders.sent)}")
        if self.checker is not None:
            task = self.checker._task
            out.append(f"checker: {self.checker.records} records, task done={task and task.done()}")
            if self.feeders is not None:
                out.append(f"missing: {self.checker.missing(dict(self.feeders.sent))}")
        for role, p in self.agents.items():
            alive = p.proc is not None and p.proc.poll() is None
            lines = p.log().splitlines()
            odd = [x for x in lines if " INFO " not in x][-8:]
            out.append(f"-- {role} (running: {alive}); not INFO: {odd}; last: {lines[-3:]}")
        if self.broker is not None:
            out.append(f"-- tansu: {self.broker.log()[-1500:]}")
        return "\n".join(out)

    def close(self) -> None:
        if self.feeders is not None:
            self.feeders.kill()
        for p in self.agents.values():
            p.close()
        if self.checker is not None:
            with contextlib.suppress(Exception):
                self.checker.stop()
        if self.ops is not None:
            self.ops.stop()
        if self.broker is not None:
            with contextlib.suppress(OSError):
                self.broker.thaw()
            self.broker.stop()
        self.net.close()

    # -- checks ------------------------------------------------------------------------

    def flowing(self) -> None:
        """Wait until every stream of every edge has reached Kafka."""
        assert self.checker is not None and self.feeders is not None
        wait_until_sync(
            lambda: (
                bool(self.feeders.snapshot())  # raises what stopped the feeders
                and all(self.checker.seen((e, s)) > 0 for e in self.edges for s in "fs")
            ),
            WAIT,
            "events of every edge in Kafka",
        )

    def drained(self, sent: dict[Key, int]) -> float:
        """Wait until everything in `sent` is in Kafka; the seconds it took."""
        assert self.checker is not None
        t0 = time.monotonic()
        try:
            wait_until_sync(lambda: self.checker.has(sent), WAIT, "Kafka to hold every event")
        except AssertionError as e:
            raise AssertionError(f"{e}; missing: {self.checker.missing(sent)}") from None
        return time.monotonic() - t0

    def finish(self, extra: dict[Key, int] | None = None) -> Verdict:
        """Stop the feeders, wait for every event (and `extra`, sent by the test) in
        Kafka, and count."""
        assert self.feeders is not None and self.checker is not None
        sent = self.feeders.stop() | (extra or {})
        self.drained(sent)
        return self.verdict(sent)

    def verdict(self, sent: dict[Key, int]) -> Verdict:
        assert self.checker is not None
        v = Verdict()
        with self.checker.lock:
            assert not self.checker.unparsed, f"bodies not ours: {self.checker.unparsed[:3]}"
            for k, c in self.checker.counts.items():
                n = sent.get(k, 0)
                missing = n - sum(1 for x in c if x < n)
                if missing:
                    v.lost[k] = missing
                extra = sum(1 for x in c if x >= n)
                if extra:
                    v.unexpected[k] = extra
                v.dups[k[0]] = v.dups.get(k[0], 0) + sum(c.values()) - len(c)
                v.total += sum(c.values())
            for k, n in sent.items():
                if k not in self.checker.counts and n:
                    v.lost[k] = n
        return v


def check(v: Verdict, dup_bounds: dict[str, int]) -> None:
    """0 lost, nothing unexpected, at most `dup_bounds[edge]` duplicates per edge."""
    assert not v.lost, f"events lost: {v.lost}"
    assert not v.unexpected, f"events never sent: {v.unexpected}"
    over = {e: v.dups.get(e, 0) for e, b in dup_bounds.items() if v.dups.get(e, 0) > b}
    assert not over, f"duplicates over the bounds {dup_bounds}: {over}"


def have_tools(*names: str) -> str | None:
    missing = [n for n in names if shutil.which(n) is None]
    return f"missing commands: {', '.join(missing)}" if missing else None


def python() -> str:
    """The interpreter the agents run with (the venv's)."""
    return sys.executable
