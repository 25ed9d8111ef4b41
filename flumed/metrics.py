"""The HTTP endpoint that serves the components' counters (see flumed.counters).

`GET /metrics` answers Flume's JSON (HTTPMetricsServer shape: every value a string),
`GET /metrics/prometheus` the same counters in Prometheus text format, and
`GET /health` 200 when every component runs, 503 otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from aiohttp import web

from flumed.counters import Counter

log = logging.getLogger("flumed.metrics")


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

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/metrics/prometheus", self._prometheus)
        app.router.add_get("/health", self._healthz)
        app.router.add_get("/", self._index)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("Metrics served on http://%s:%d/metrics.", self.host, self.port)

    async def stop(self) -> None:
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
