"""Readiness with reasons: what keeps an agent from moving its events, and since when.

`HealthCheck.report()` is read by `GET /health`. A problem is one of:
- a component's own report (`Component.report_problem`: an unreadable input, positions
  that cannot be saved, a file channel that cannot write ...), or a component not running;
- a channel that is full, or a file channel counting itself Unhealthy;
- a sink (or sink group) that has not delivered for longer than `grace` seconds while its
  channel holds events (a collector unreachable, a broker down);
- a sink processor's own report (a failover group running on its last sink).

Pure reads of live state: no I/O, cheap enough for a probe every second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from flumed.lifecycle import LifecycleState

#: Seconds a sink may fail while its channel holds events before /health reports it.
DEFAULT_HEALTH_GRACE = 30.0


@dataclass(frozen=True, slots=True)
class Problem:
    component: str
    what: str
    since: float

    def as_json(self) -> dict[str, str]:
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        return {"component": self.component, "what": self.what, "since": since}


class AgentView(Protocol):
    """What the health check reads of an agent (flumed.agent.Agent)."""

    sources: dict[str, Any]
    channels: dict[str, Any]
    sinks: dict[str, Any]
    runners: dict[str, Any]


class HealthCheck:
    """Called by the metrics endpoint; remembers since when an observed condition holds."""

    def __init__(self, agent: AgentView, grace: float = DEFAULT_HEALTH_GRACE) -> None:
        self.agent = agent
        self.grace = grace
        self._seen: dict[tuple[str, str], float] = {}

    def _observed(self, component: str, what: str, now: float, out: list[Problem]) -> None:
        since = self._seen.setdefault((component, what.split(":")[0]), now)
        out.append(Problem(component, what, since))

    def report(self) -> list[Problem]:
        """Every current problem, sources first, then channels, then sinks."""
        a = self.agent
        now = time.time()
        out: list[Problem] = []
        seen_before = set(self._seen)
        for kind, comps in (("SOURCE", a.sources), ("CHANNEL", a.channels), ("SINK", a.sinks)):
            for name, comp in comps.items():
                label = f"{kind}.{name}"
                if comp.state is not LifecycleState.RUNNING:
                    self._observed(label, f"not running: {comp.state.value}", now, out)
                out.extend(Problem(label, what, since) for what, since in comp.problems())
        for name, ch in a.channels.items():
            label = f"CHANNEL.{name}"
            size, cap = ch.size, ch.capacity
            if cap and size >= cap:
                self._observed(label, f"full: {size} of {cap} events", now, out)
            if getattr(ch.counter, "Unhealthy", 0):
                self._observed(label, "unhealthy: the last write to its store failed", now, out)
        for name, runner in a.runners.items():
            processor = runner.processor
            label = f"SINK.{name}" if name in a.sinks else f"SINKGROUP.{name}"
            since = runner.failing_since
            if since is not None and now - since >= self.grace:
                held = sum(s.channel.size for s in processor.sinks)
                if held:
                    out.append(
                        Problem(
                            label,
                            f"has not delivered for {now - since:.0f}s while its channel holds "
                            f"{held} events: {runner.last_error}",
                            since,
                        )
                    )
            problems = getattr(processor, "problems", None)
            if problems is not None:
                out.extend(Problem(f"SINKGROUP.{name}", w, s) for w, s in problems())
        # Forget conditions that cleared, so a new occurrence gets a new `since`.
        current = {(p.component, p.what.split(":")[0]) for p in out}
        for k in seen_before - current:
            self._seen.pop(k, None)
        return out
