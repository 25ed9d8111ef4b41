"""Per-component counters with Flume's names, and the HTTP endpoint that serves them.

`GET /metrics` answers Flume's JSON (HTTPMetricsServer shape: every value a string),
`GET /metrics/prometheus` the same counters in Prometheus text format, and
`GET /health` 200 when every component runs, 503 otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import ClassVar

from aiohttp import web

log = logging.getLogger("flumed.metrics")


def _now_ms() -> int:
    return int(time.time() * 1000)


class Counter:
    """A group of counters for one component. Attributes are Flume's counter names."""

    TYPE: ClassVar[str] = "OTHER"
    NAMES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        for n in self.NAMES:
            setattr(self, n, 0)
        self.StartTime = 0
        self.StopTime = 0

    def start(self) -> None:
        self.StartTime = _now_ms()
        self.StopTime = 0

    def stop(self) -> None:
        self.StopTime = _now_ms()

    def values(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {n: getattr(self, n) for n in self.NAMES}
        out["StartTime"] = self.StartTime
        out["StopTime"] = self.StopTime
        return out

    def flume_json(self) -> dict[str, str]:
        out = {k: str(v) for k, v in self.values().items()}
        out["Type"] = self.TYPE
        return out


class SourceCounter(Counter):
    TYPE = "SOURCE"
    NAMES = (
        "EventReceivedCount",
        "EventAcceptedCount",
        "AppendReceivedCount",
        "AppendAcceptedCount",
        "AppendBatchReceivedCount",
        "AppendBatchAcceptedCount",
        "OpenConnectionCount",
        "EventReadFail",
        "ChannelWriteFail",
        "GenericProcessingFail",
    )
    EventReceivedCount: int
    EventAcceptedCount: int
    AppendReceivedCount: int
    AppendAcceptedCount: int
    AppendBatchReceivedCount: int
    AppendBatchAcceptedCount: int
    OpenConnectionCount: int
    EventReadFail: int
    ChannelWriteFail: int
    GenericProcessingFail: int


class ChannelCounter(Counter):
    TYPE = "CHANNEL"
    NAMES = (
        "EventPutAttemptCount",
        "EventPutSuccessCount",
        "EventTakeAttemptCount",
        "EventTakeSuccessCount",
    )
    EventPutAttemptCount: int
    EventPutSuccessCount: int
    EventTakeAttemptCount: int
    EventTakeSuccessCount: int

    def __init__(self, name: str, size: Callable[[], int], capacity: Callable[[], int]) -> None:
        super().__init__(name)
        self._size = size
        self._capacity = capacity

    def values(self) -> dict[str, float | int]:
        out = super().values()
        size, cap = self._size(), self._capacity()
        out["ChannelSize"] = size
        out["ChannelCapacity"] = cap
        out["ChannelFillPercentage"] = (100.0 * size / cap) if cap else 0.0
        return out


class SinkCounter(Counter):
    TYPE = "SINK"
    NAMES = (
        "ConnectionCreatedCount",
        "ConnectionClosedCount",
        "ConnectionFailedCount",
        "BatchEmptyCount",
        "BatchUnderflowCount",
        "BatchCompleteCount",
        "EventDrainAttemptCount",
        "EventDrainSuccessCount",
        "EventWriteFail",
        "ChannelReadFail",
    )
    ConnectionCreatedCount: int
    ConnectionClosedCount: int
    ConnectionFailedCount: int
    BatchEmptyCount: int
    BatchUnderflowCount: int
    BatchCompleteCount: int
    EventDrainAttemptCount: int
    EventDrainSuccessCount: int
    EventWriteFail: int
    ChannelReadFail: int

    def batch(self, taken: int, batch_size: int) -> None:
        """Count one take of `taken` events against a batch size, as Flume's sinks do."""
        if taken == 0:
            self.BatchEmptyCount += 1
        elif taken < batch_size:
            self.BatchUnderflowCount += 1
        else:
            self.BatchCompleteCount += 1


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
