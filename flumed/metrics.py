"""The HTTP endpoint that serves the components' counters (see flumed.counters).

`GET /metrics` answers Flume's JSON (HTTPMetricsServer shape: every value a string),
`GET /metrics/prometheus` the same counters in Prometheus text format, and
`GET /health` 200 when every component runs, 503 otherwise. Against hostile clients
(flumed.http_server): at most MAX_CONNECTIONS connections, request headers within 10 s
of their first byte, idle connections closed after 60 s, accept failures (out of file
descriptors) logged and retried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from aiohttp import web

from flumed.counters import Counter
from flumed.http_server import GuardedEndpoint, guard_middleware

log = logging.getLogger("flumed.metrics")

#: Most connections to the endpoint at once; its header and idle timeouts are
#: flumed.http_server's defaults (10 s, 60 s).
MAX_CONNECTIONS = 100


def flume_json(counters: Iterable[Counter]) -> dict[str, dict[str, str]]:
    return {f"{c.TYPE}.{c.name}": c.flume_json() for c in counters}


def _prom_name(counter_name: str) -> str:
    out = []
    for i, ch in enumerate(counter_name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "flume_" + "".join(out)


def prometheus_text(counters: Iterable[Counter], agent: str) -> str:
    """Render counters in Prometheus text exposition format 0.0.4."""
    series: dict[str, list[str]] = {}
    for c in counters:
        for k, v in c.values().items():
            metric = _prom_name(k)
            labels = f'agent="{agent}",type="{c.TYPE.lower()}",component="{c.name}"'
            series.setdefault(metric, []).append(f"{metric}{{{labels}}} {v}")
    lines: list[str] = []
    for metric, rows in series.items():
        kind = "counter" if metric.endswith("_count") else "gauge"
        lines.append(f"# TYPE {metric} {kind}")
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
    ) -> None:
        self.host = host
        self.port = port
        self.agent = agent
        self._counters = counters
        self._health = health
        self._runner: web.AppRunner | None = None
        # aiohttp alone has no header timeout and no connection cap (issue 9.4).
        self._guard = GuardedEndpoint("Metrics endpoint", max_connections=MAX_CONNECTIONS)

    async def start(self) -> None:
        app = web.Application(middlewares=[guard_middleware(self._guard)])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/metrics/prometheus", self._prometheus)
        app.router.add_get("/health", self._healthz)
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
        states = self._health()
        ok = all(s == "RUNNING" for s in states.values())
        return web.json_response(
            {"status": "UP" if ok else "DOWN", "components": states},
            status=200 if ok else 503,
        )
