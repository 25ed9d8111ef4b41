"""The `flumed` command: agent, validate, convert (and send, for Avro RPC)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from flumed import __version__, registry, systemd, workers
from flumed.agent import DEFAULT_GRACE, Agent, ReloadError
from flumed.config.graph import AgentSpec, agent_names, build_agent
from flumed.config.loader import is_properties, load_config
from flumed.config.preflight import preflight
from flumed.config.properties import properties_to_document, to_toml
from flumed.counters import Counter
from flumed.errors import ComponentStartError, ConfigError
from flumed.health import DEFAULT_HEALTH_GRACE, HealthCheck
from flumed.logs import FORMATS, LEVELS, setup_logging
from flumed.metrics import MetricsServer

log = logging.getLogger("flumed")

#: The embedded default agent: netcat on 127.0.0.1:44444 -> memory -> logger.
DEFAULT_CONF = Path(__file__).with_name("default.toml")


def load_spec(
    path: str, name: str | None, sysprops: dict[str, str] | None = None, strict: bool = False
) -> AgentSpec:
    """Load, resolve `${...}` and check one agent. A properties file's unknown keys are
    warnings unless `strict` (TOML's are always errors). Raises ConfigError."""
    loaded = load_config(path, sysprops)
    spec = build_agent(loaded.doc, name, str(path), strict=strict or not loaded.properties)
    # In a worker process: that worker's share (flumed.workers).
    return workers.this_process(spec)


def sysprops(args: argparse.Namespace) -> dict[str, str]:
    """`-Dname=value` arguments as a dict (`${sys:name}`). Raises ConfigError."""
    out: dict[str, str] = {}
    for d in getattr(args, "define", None) or []:
        name, eq, value = d.partition("=")
        if not eq or not name:
            raise ConfigError(f"-D{d}: expected -DNAME=VALUE")
        out[name] = value
    return out


class AgentProcess:
    """The daemon: one agent, its metrics endpoint, signals and systemd notifications."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_event = asyncio.Event()
        self.agent: Agent | None = None
        self.metrics: MetricsServer | None = None
        self._signals = 0
        self._reloads: asyncio.Queue[None] = asyncio.Queue()

    def _on_stop_signal(self, signame: str) -> None:
        self._signals += 1
        if self._signals > 1 and workers.slot() is not None:
            return  # a worker: its supervisor (and systemd) signal it; they escalate
        if self._signals > 1:
            log.warning("Second %s: stopping at once.", signame)
            os._exit(1)
        log.info("Received %s: stopping gracefully (send again to stop at once).", signame)
        self.stop_event.set()

    async def run(self) -> int:
        args = self.args
        try:
            spec = load_spec(args.file, args.name, sysprops(args))
        except ConfigError as e:
            for p in e.problems:
                log.error("%s", p)
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._reloads.put_nowait, None)
        self.agent = Agent(spec, grace=args.grace)
        try:
            await self.agent.start()
        except ComponentStartError as e:
            log.error("%s", e)
            return 1
        if args.metrics_port is not None:
            check = HealthCheck(self.agent, args.health_grace)
            self.metrics = MetricsServer(
                args.metrics_bind,
                args.metrics_port,
                spec.name,
                self._counters,
                self._health,
                check.report,
                tap=args.tap,
                tap_remote=args.tap_remote,
            )
            try:
                await self.metrics.start()
            except OSError as e:
                log.error("Metrics endpoint on port %s failed to start: %s", args.metrics_port, e)
                await self.agent.stop()
                return 1
        runtime_started()
        systemd.notify(workers.ready_message(self.metrics.port if self.metrics else None))
        tasks = [asyncio.create_task(self._reload_loop(), name="reload")]
        interval = systemd.watchdog_interval()
        if interval:
            tasks.append(asyncio.create_task(systemd.watchdog(interval, self.stop_event)))
        await self.stop_event.wait()
        systemd.notify("STOPPING=1")
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await t
                except Exception:  # the agent must still be stopped and drained
                    log.exception("Task %s had failed.", t.get_name())
        if self.metrics is not None:
            await self.metrics.stop()
        await self.agent.stop()
        return 0

    def _counters(self) -> list[Counter]:
        return self.agent.counters() if self.agent else []

    def _health(self) -> dict[str, str]:
        return self.agent.health() if self.agent else {}

    async def _reload_loop(self) -> None:
        """Serve SIGHUPs one at a time, for the life of the process: no error of one
        reload ends the loop (later reloads keep working, shutdown still drains)."""
        while True:
            await self._reloads.get()
            systemd.notify("RELOADING=1")
            try:
                await self._reload_once()
            except Exception:
                log.exception(
                    "Reload failed with an unexpected error; the agent runs on with what is "
                    "running. Fix the configuration and send SIGHUP again."
                )
            systemd.notify("READY=1")

    async def _reload_once(self) -> None:
        assert self.agent is not None
        log.info("Received SIGHUP: reloading %s.", self.args.file)
        try:
            spec = load_spec(self.args.file, self.agent.name, sysprops(self.args))
        except ConfigError as e:
            log.error("Reload refused; the running configuration stays. Errors:")
            for p in e.problems:
                log.error("%s", p)
            return
        try:
            await self.agent.reload(spec)
        except ReloadError as e:
            log.error("%s", e)
        except ComponentStartError as e:
            log.error("Reload incomplete: %s", e)


def prepare_runtime() -> None:
    """The runtime an agent runs in, set up before its event loop: uvloop's loop policy
    and the tuned cyclic GC. Used by `flumed agent` and by the benchmarks
    (tests/bench/_harness.py), so their figures are the daemon's; `runtime_started()`
    follows once the agent started."""
    import uvloop  # here: validate and the other commands never run a loop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    tune_gc()


def runtime_started() -> None:
    """Called once an agent started: everything built at start-up lives as long as the
    process, so keep it out of the cyclic collector's generations (DESIGN.md,
    performance notes)."""
    gc.collect()
    gc.freeze()


def tune_gc() -> None:
    """Events hold no cycles, so the cyclic collector rarely finds garbage but costs
    ~20% of throughput at default thresholds (measured: seq -> memory -> null 1.54M vs
    1.87M events/s). Collect far less often."""
    gc.set_threshold(50_000, 50, 100)


def cmd_agent(args: argparse.Namespace) -> int:
    try:
        setup_logging(args.log_level, args.log_format)
    except ValueError as e:
        print(f"flumed agent: {e}", file=sys.stderr)
        return 2
    count, agent = workers.plan(args, lambda f, n: load_spec(f, n, sysprops(args)))
    if count > 1:
        return workers.supervise(args, count, agent)
    prepare_runtime()
    workers.setup_worker()
    return asyncio.run(AgentProcess(args).run())


def cmd_validate(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    if args.list_types:
        for kind, table in registry.TABLES.items():
            print(f"{kind}:")
            for row in table.values():
                flume = row.flume[0] if row.flume else "-"
                print(f"  {row.name:20} {flume:58} {row.description}")
        return 0
    if not args.file:
        print("flumed validate: -f FILE is required", file=sys.stderr)
        return 2
    try:
        loaded = load_config(args.file, sysprops(args))
    except ConfigError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return 1
    doc = loaded.doc
    strict = args.strict or not loaded.properties
    names = [args.name] if args.name else agent_names(doc)
    if not names:
        print(f"{args.file}: no agents defined", file=sys.stderr)
        return 1
    problems: list[str] = []
    for n in names:
        try:
            spec = build_agent(doc, n, args.file, strict=strict)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        problems.extend(preflight(spec, args.file, check_ports=args.check_ports))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({', '.join(names)})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as e:
        print(f"{args.file}: cannot read: {e.strerror}", file=sys.stderr)
        return 1
    if not is_properties(Path(args.file), text):
        print(
            f"{args.file}: looks like TOML already; `flumed convert` reads a Flume "
            ".properties file (`flumed validate -f` checks a TOML file)",
            file=sys.stderr,
        )
        return 1
    notes: list[str] = []
    try:
        out = to_toml(properties_to_document(text, notes))
    except ConfigError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return 1
    for n in notes:
        print(f"{args.file}: {n}", file=sys.stderr)
    sys.stdout.write(out)
    return 0


def _add_define(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-D",
        dest="define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a system property for ${sys:NAME} in the configuration (Flume's -D)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flumed",
        description=__doc__,
        epilog="Environment: FLUMED_LOG_LEVEL, FLUMED_LOG_FORMAT (defaults for `agent`).",
    )
    p.add_argument("--version", action="version", version=f"flumed {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("agent", help="run one agent")
    a.add_argument(
        "-f",
        "--conf-file",
        dest="file",
        default=str(DEFAULT_CONF),
        help="TOML or Flume .properties file (default: the embedded netcat -> logger agent)",
    )
    a.add_argument("-n", "--name", default=None, help="agent name (optional with one agent)")
    a.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on this port")
    a.add_argument("--metrics-bind", default="0.0.0.0", help="metrics address (default 0.0.0.0)")
    a.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run the agent in N processes under one supervisor (default: the agent's "
        "'workers' key, else 1); see docs/workers.md",
    )
    a.add_argument("--grace", type=float, default=DEFAULT_GRACE, help="drain seconds on stop")
    a.add_argument(
        "--tap",
        action="store_true",
        help="serve GET /tap on the metrics endpoint for `flumed tap` (off by default)",
    )
    a.add_argument(
        "--tap-remote",
        action="store_true",
        help="answer /tap to non-loopback clients too (default: loopback only)",
    )
    a.add_argument(
        "--health-grace",
        type=float,
        default=DEFAULT_HEALTH_GRACE,
        help="seconds a sink may fail while its channel holds events before /health "
        "answers 503 (default %(default)s)",
    )
    a.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        default=os.environ.get("FLUMED_LOG_LEVEL", "INFO").upper(),
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: $FLUMED_LOG_LEVEL or INFO)",
    )
    a.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("FLUMED_LOG_FORMAT", "plain"),
        help="plain: one line an entry; json: one JSON object a line "
        "(default: $FLUMED_LOG_FORMAT or plain)",
    )
    _add_define(a)
    a.set_defaults(func=cmd_agent)

    v = sub.add_parser("validate", help="check a configuration without starting it")
    v.add_argument("-f", "--conf-file", dest="file")
    v.add_argument("-n", "--name", default=None)
    v.add_argument("--list-types", action="store_true", help="print the component types")
    v.add_argument(
        "--strict",
        action="store_true",
        help="refuse unknown keys in a .properties file too (TOML always refuses them)",
    )
    v.add_argument(
        "--check-ports",
        action="store_true",
        help="also try to bind every listening port (fails when one is taken)",
    )
    _add_define(v)
    v.set_defaults(func=cmd_validate)

    c = sub.add_parser("convert", help="print a Flume .properties file as TOML")
    c.add_argument("file")
    c.set_defaults(func=cmd_convert)

    _add_plugin_commands(sub)
    return p


def _add_plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands that live beside their component (e.g. `send` in flumed.rpc)."""
    from flumed.rpc.send import add_parser

    add_parser(sub)
    from flumed.channels.file_recover import add_parser as add_recover_parser

    add_recover_parser(sub)
    from flumed.tap import add_parser as add_tap_parser
    from flumed.top import add_parser as add_top_parser

    add_top_parser(sub)
    add_tap_parser(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except ConfigError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return 1
