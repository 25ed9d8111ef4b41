"""The HTTP endpoint that serves the components' counters (see flumed.counters).

`GET /metrics` answers Flume's JSON (HTTPMetricsServer shape: every value a string),
`GET /metrics/prometheus` the same counters in Prometheus text format, and
`GET /health` 200 when every component runs and nothing is stuck, else 503 with the
problems (flumed.health); `GET /health/live` 200 while the event loop answers.
Against hostile clients (flumed.http_server): at most MAX_CONNECTIONS connections,
request headers within 10 s of their first byte, idle connections closed after 60 s,
accept failures (out of file descriptors) logged and retried.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable

from aiohttp import web

from flumed.counters import Counter
from flumed.health import Problem
from flumed.http_server import GuardedEndpoint, guard_middleware
from flumed.lifecycle import LifecycleState
from flumed.tap import HUB, MAX_LIMIT, TapSubscriber, parse_match, serve_until_done

log = logging.getLogger("flumed.metrics")

#: Most connections to the endpoint at once; its header and idle timeouts are
#: flumed.http_server's defaults (10 s, 60 s).
MAX_CONNECTIONS = 100


def flume_json(counters: Iterable[Counter]) -> dict[str, dict[str, str]]:
    return {f"{c.TYPE}.{c.name}": c.flume_json() for c in counters}


#: One line of help per Flume counter name; names not listed get a generic line.
HELP: dict[str, str] = {
    "EventReceivedCount": "Events the source received.",
    "EventAcceptedCount": "Events the source committed to its channels.",
    "AppendReceivedCount": "Single-event appends received.",
    "AppendAcceptedCount": "Single-event appends committed.",
    "AppendBatchReceivedCount": "Batches received.",
    "AppendBatchAcceptedCount": "Batches committed.",
    "OpenConnectionCount": "Connections open now.",
    "EventReadFail": "Events or requests refused as unreadable.",
    "ChannelWriteFail": "Batches the channels refused (full or failing).",
    "GenericProcessingFail": "Other processing failures.",
    "EventPutAttemptCount": "Events offered to the channel.",
    "EventPutSuccessCount": "Events committed into the channel.",
    "EventTakeAttemptCount": "Take attempts on the channel.",
    "EventTakeSuccessCount": "Events taken and committed out of the channel.",
    "ChannelSize": "Events in the channel now.",
    "ChannelCapacity": "The channel's capacity in events.",
    "ChannelFillPercentage": "How full the channel is, in percent.",
    "ConnectionCreatedCount": "Connections the sink opened.",
    "ConnectionClosedCount": "Connections the sink closed.",
    "ConnectionFailedCount": "Connection attempts that failed.",
    "BatchEmptyCount": "Takes that found the channel empty.",
    "BatchUnderflowCount": "Takes smaller than the batch size.",
    "BatchCompleteCount": "Takes of a full batch.",
    "EventDrainAttemptCount": "Events the sink tried to deliver.",
    "EventDrainSuccessCount": "Events the sink delivered.",
    "EventWriteFail": "Deliveries that failed.",
    "ChannelReadFail": "Takes that failed.",
    "StartTime": "When the component started (Unix time).",
    "StopTime": "When the component stopped (Unix time; 0 while running).",
    "Unhealthy": "1 while the channel cannot write, else 0.",
    "Closed": "1 when the channel is closed, else 0.",
}


def _snake(counter_name: str) -> str:
    out = []
    for i, ch in enumerate(counter_name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def prom_family(counter_name: str, gauge: bool) -> str:
    """The Prometheus family name of a Flume counter: counters end in `_total`
    (`EventAcceptedCount` → `flume_event_accepted_total`), times are in seconds."""
    snake = _snake(counter_name)
    if counter_name in ("StartTime", "StopTime"):
        return f"flume_{snake}_seconds"
    if gauge:
        return f"flume_{snake}"
    snake = snake.removesuffix("_count")
    return f"flume_{snake}_total"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(counters: Iterable[Counter], agent: str) -> str:
    """Render counters in Prometheus text exposition format 0.0.4: one family per counter
    name with `# HELP` and `# TYPE`, labels agent, kind, type and component."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for c in counters:
        kind = c.TYPE.lower()
        labels = (
            f'agent="{_label(agent)}",kind="{kind}",type="{_label(c.component_type or kind)}",'
            f'component="{_label(c.name)}"'
        )
        for k, v in c.values().items():
            gauge = k in c.GAUGES
            family = prom_family(k, gauge)
            if k in ("StartTime", "StopTime"):
                v = v / 1000
            entry = families.get(family)
            if entry is None:
                help_text = HELP.get(k, f"Flume counter {k}.")
                entry = families[family] = ("gauge" if gauge else "counter", help_text, [])
            entry[2].append(f"{family}{{{labels}}} {v}")
    lines: list[str] = []
    for family, (kind_, help_text, rows) in families.items():
        lines.append(f"# HELP {family} {help_text}")
        lines.append(f"# TYPE {family} {kind_}")
        lines.extend(rows)
    return "\n".join(lines) + "\n"


class MetricsServer:
    """The HTTP endpoint. The agent owns it; `counters()` and `health()` are read live."""

    def __init__(
        self,
        host: str,
        port: int,
        agent: str,
        counters: Callable[[], list[Counter]],
        health: Callable[[], dict[str, str]],
        problems: Callable[[], list[Problem]] = list,
        *,
        tap: bool = False,
        tap_remote: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.agent = agent
        self._counters = counters
        self._health = health
        self._problems = problems
        self.tap = tap
        self.tap_remote = tap_remote
        self._runner: web.AppRunner | None = None
        # aiohttp alone has no header timeout and no connection cap (issue 9.4).
        self._guard = GuardedEndpoint("Metrics endpoint", max_connections=MAX_CONNECTIONS)

    async def start(self) -> None:
        app = web.Application(middlewares=[guard_middleware(self._guard)])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/metrics/prometheus", self._prometheus)
        app.router.add_get("/health", self._healthz)
        app.router.add_get("/health/live", self._live)
        if self.tap:
            app.router.add_get("/tap", self._tap)
        app.router.add_get("/", self._index)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        assert self._runner.server is not None
        try:
            self.port = await self._guard.start(self._runner.server, self.host, self.port)
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("Metrics served on http://%s:%d/metrics.", self.host, self.port)

    async def stop(self) -> None:
        await self._guard.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text='<html><body><a href="./metrics">Metrics</a></body></html>',
            content_type="text/html",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = json.dumps(flume_json(self._counters()), separators=(",", ":"))
        return web.Response(text=body, content_type="application/json", charset="utf-8")

    async def _prometheus(self, request: web.Request) -> web.Response:
        return web.Response(
            text=prometheus_text(self._counters(), self.agent),
            content_type="text/plain",
            charset="utf-8",
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        """Readiness: 200 when every component runs and nothing is stuck; else 503 with
        the problems (component, what, since)."""
        states = self._health()
        problems = [p.as_json() for p in self._problems()]
        ok = not problems and all(s == LifecycleState.RUNNING.value for s in states.values())
        return web.json_response(
            {"status": "UP" if ok else "DOWN", "problems": problems, "components": states},
            status=200 if ok else 503,
        )

    async def _live(self, request: web.Request) -> web.Response:
        """Liveness: answered while the event loop answers (a hung loop answers nothing)."""
        return web.json_response({"status": "UP"})

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        """`flumed tap`'s endpoint (only with --tap): JSON lines of sampled events."""
        if not self.tap_remote and not _loopback(request.remote):
            return web.json_response(
                {"error": "tap is served to loopback clients only (see --tap-remote)"},
                status=403,
            )
        q = request.query
        component = q.get("component", "")
        names = {c.name for c in self._counters() if c.TYPE in ("CHANNEL", "SINK")}
        if component not in names:
            return web.json_response(
                {"error": f"no channel or sink named {component!r}", "known": sorted(names)},
                status=404,
            )
        try:
            limit = int(q.get("limit", "10"))
            timeout = float(q.get("timeout", "60"))
            match = parse_match(q.getall("header", []))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        if not 1 <= limit <= MAX_LIMIT or not 0 < timeout <= 600:
            return web.json_response(
                {"error": f"limit must be 1..{MAX_LIMIT} and timeout 0..600 seconds"}, status=400
            )
        sub = TapSubscriber(component, limit, match)
        HUB.subscribe(sub)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            await serve_until_done(sub, resp.write, timeout)
            await resp.write_eof()
        finally:
            HUB.unsubscribe(sub)
        return resp


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
