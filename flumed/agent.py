"""One agent: builds the graph from an AgentSpec, starts, stops and reloads it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flumed import registry
from flumed.channels.base import Channel
from flumed.config.graph import AgentSpec, SinkGroupSpec
from flumed.counters import Counter
from flumed.errors import ComponentStartError, FlumedError
from flumed.interceptors.base import Interceptor
from flumed.lifecycle import (
    DEFAULT_STOP_TIMEOUT,
    LifecycleState,
    deadline_after,
    remaining,
)
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import build_selector
from flumed.sinks.base import Sink
from flumed.sinks.runner import DefaultSinkProcessor, SinkRunner
from flumed.sources.base import Source

log = logging.getLogger("flumed.agent")

DEFAULT_GRACE = 10.0


class Agent:
    """Owns every component of one agent and the order they start and stop in.

    Start: channels → sinks and their runners → sources. Stop: the reverse, with
    sinks draining their channels for up to `grace` seconds (Flume's Application).
    """

    def __init__(self, spec: AgentSpec, grace: float = DEFAULT_GRACE) -> None:
        self.spec = spec
        self.grace = grace
        self.channels: dict[str, Channel] = {}
        self.sinks: dict[str, Sink] = {}
        self.runners: dict[str, SinkRunner] = {}
        self.sources: dict[str, Source] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    # -- building ----------------------------------------------------------------------
    def _make_channel(self, name: str) -> Channel:
        s = self.spec.channels[name]
        ch: Channel = s.cls(name, s.config)
        ch.counter.component_type = _type_label("channels", s.type)
        return ch

    def _new_sink(self, name: str) -> Sink:
        """Construct a sink (its channel is set when it is wired, before start)."""
        s = self.spec.sinks[name]
        sink: Sink = s.cls(name, s.config)
        sink.counter.component_type = _type_label("sinks", s.type)
        return sink

    def _make_sink(self, name: str) -> Sink:
        sink = self._new_sink(name)
        sink.channel = self.channels[self.spec.sinks[name].channel]
        return sink

    def _new_source(self, name: str) -> tuple[Source, list[Interceptor]]:
        """Construct a source and its interceptors (wired to channels before start)."""
        s = self.spec.sources[name]
        src: Source = s.cls(name, s.config)
        src.counter.component_type = _type_label("sources", s.type)
        return src, [i.cls(i.name, i.config) for i in s.interceptors]

    def _wire_source(self, src: Source, icpts: list[Interceptor]) -> None:
        s = self.spec.sources[src.name]
        chans = [self.channels[c] for c in s.channels]
        src.processor = ChannelProcessor(build_selector(chans, s.selector), icpts)

    def _make_source(self, name: str) -> Source:
        src, icpts = self._new_source(name)
        self._wire_source(src, icpts)
        return src

    def _groups(self) -> dict[str, SinkGroupSpec | None]:
        return runner_groups(self.spec)

    def _make_runner(self, name: str, group: SinkGroupSpec | None) -> SinkRunner:
        if group is None:
            return SinkRunner(DefaultSinkProcessor(name, [self.sinks[name]]))
        members = [self.sinks[m] for m in group.sinks]
        return SinkRunner(group.processor_cls(name, members, group.config))

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start everything, or nothing: on a failure, stop what started and raise.

        Raises:
            ComponentStartError: naming the component that failed and why.
        """
        try:
            for name in self.spec.channels:
                self.channels[name] = ch = self._make_channel(name)
                await _start(ch, "channel")
            for name in self.spec.sinks:
                self.sinks[name] = sink = self._make_sink(name)
                await _start(sink, "sink")
            for rname, group in self._groups().items():
                self.runners[rname] = r = self._make_runner(rname, group)
                r.start()
            for name in self.spec.sources:
                self.sources[name] = src = self._make_source(name)
                await _start(src, "source")
        except BaseException:
            await self.stop()
            raise
        log.info(
            "Agent %s started: %d sources, %d channels, %d sinks.",
            self.name,
            len(self.sources),
            len(self.channels),
            len(self.sinks),
        )

    async def stop(self) -> None:
        """Stop sources, let sinks drain, stop sinks, channels: all within one deadline.

        The deadline is `grace` seconds from now; each component sees it as
        `stop_deadline` (see Component.stop_timeout). Sources stop concurrently.
        """
        deadline = deadline_after(self.grace)
        await _stop_all(self.sources.values(), deadline)
        await asyncio.gather(*(r.stop(remaining(deadline)) for r in self.runners.values()))
        await _stop_all(self.sinks.values(), deadline)
        await _stop_all(self.channels.values(), deadline)
        self.sources.clear()
        self.runners.clear()
        self.sinks.clear()
        self.channels.clear()
        log.info("Agent %s stopped.", self.name)

    async def reload(self, new: AgentSpec) -> None:
        """Move to `new`: unchanged components keep running, changed ones restart.

        Called by the daemon on SIGHUP. First `plan_reload` (pure) decides what restarts,
        then every new component is constructed: an error up to there leaves the running
        graph untouched (ReloadError). Then the plan is applied. A changed channel hands
        its queued events to its successor (`adopt`), so nothing committed is lost.
        Whatever is in `new` but not running afterwards (a component that failed to
        start, now or at an earlier reload) is started again at the next reload.

        Raises:
            ReloadError: a new component could not be built; nothing was changed.
            ComponentStartError: some new components failed to start (all others run).
        """
        plan = plan_reload(self.spec, new)
        try:
            built = self._build(new, plan)
        except Exception as e:
            raise ReloadError(
                f"Reload of agent {self.name} refused, the running graph is unchanged: "
                f"building the new components failed: {e!r}"
            ) from e
        log.info(
            "Reloading agent %s: restarting sources %s, sinks %s, channels %s.",
            self.name,
            sorted(plan.sources_stop) or "none",
            sorted(plan.sinks_stop) or "none",
            sorted(plan.channels_restart) or "none",
        )
        self.spec = new
        await self._apply(new, plan, built)
        log.info("Agent %s reloaded.", self.name)

    def _build(self, new: AgentSpec, plan: ReloadPlan) -> _Built:
        """Construct (not start) every component `new` needs that is not kept running."""
        prev, self.spec = self.spec, new
        try:
            b = _Built()
            for n in new.channels:
                if n in plan.channels_restart or n not in self.channels:
                    b.channels[n] = self._make_channel(n)
            for n in new.sinks:
                if n in plan.sinks_stop or n not in self.sinks:
                    b.sinks[n] = self._new_sink(n)
            for n in new.sources:
                if n in plan.sources_stop or n not in self.sources:
                    b.sources[n] = self._new_source(n)
            return b
        finally:
            self.spec = prev

    async def _apply(self, new: AgentSpec, plan: ReloadPlan, built: _Built) -> None:
        deadline = deadline_after(self.grace)
        await _stop_all(
            [s for n in plan.sources_stop if (s := self.sources.pop(n, None))], deadline
        )
        runners = [r for n in plan.runners_stop if (r := self.runners.pop(n, None))]
        # Runners being replaced only finish their current batch: no draining.
        await asyncio.gather(*(r.stop(remaining(deadline), drain=False) for r in runners))
        await _stop_all([k for n in plan.sinks_stop if (k := self.sinks.pop(n, None))], deadline)
        retired: list[Channel] = []
        for n in sorted(plan.channels_restart):
            oldch = self.channels.pop(n, None)
            if oldch is None:
                continue
            ch = built.channels.get(n)
            if ch is not None:
                adopt = getattr(ch, "adopt", None)
                if adopt is not None:
                    adopt(oldch)
                elif oldch.size:
                    log.info("Channel %s restarts; its %d events stay in its store.", n, oldch.size)
            elif oldch.size:
                log.warning("Channel %s was removed holding %d events.", n, oldch.size)
            retired.append(oldch)
        # The old channel releases its store (a file channel's lock) before the new opens it.
        await _stop_all(retired, deadline)
        failures: list[str] = []
        for n, ch in built.channels.items():
            if await _try_start(ch, "channel", failures):
                self.channels[n] = ch
        for n, sink in built.sinks.items():
            chan = self.channels.get(new.sinks[n].channel)
            if chan is None:
                failures.append(f"sink {n}: its channel {new.sinks[n].channel} is not running")
                continue
            sink.channel = chan
            if await _try_start(sink, "sink", failures):
                self.sinks[n] = sink
        for n, g in runner_groups(new).items():
            members = g.sinks if g is not None else (n,)
            if n not in self.runners and all(m in self.sinks for m in members):
                self.runners[n] = r = self._make_runner(n, g)
                r.start()
        for n, (src, icpts) in built.sources.items():
            missing = [c for c in new.sources[n].channels if c not in self.channels]
            if missing:
                failures.append(f"source {n}: its channels {missing} are not running")
                continue
            self._wire_source(src, icpts)
            if await _try_start(src, "source", failures):
                self.sources[n] = src
        if failures:
            raise ComponentStartError("; ".join(failures))

    # -- observation -------------------------------------------------------------------
    def counters(self) -> list[Counter]:
        out: list[Counter] = [s.counter for s in self.sources.values()]
        out += [c.counter for c in self.channels.values()]
        out += [s.counter for s in self.sinks.values()]
        return out

    def health(self) -> dict[str, str]:
        out = {f"SOURCE.{n}": s.state.value for n, s in self.sources.items()}
        out.update({f"CHANNEL.{n}": c.state.value for n, c in self.channels.items()})
        out.update({f"SINK.{n}": s.state.value for n, s in self.sinks.items()})
        return out


class ReloadError(FlumedError):
    """A reload was refused before anything changed (the message says why)."""


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload stops (pure data, from `plan_reload`). Everything in the new spec
    that is not running after the stops is then started."""

    channels_restart: frozenset[str]
    sources_stop: frozenset[str]
    sinks_stop: frozenset[str]
    runners_stop: frozenset[str]


class _Built:
    """Components constructed for a reload, not yet started."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.sinks: dict[str, Sink] = {}
        self.sources: dict[str, tuple[Source, list[Interceptor]]] = {}


def runner_groups(spec: AgentSpec) -> dict[str, SinkGroupSpec | None]:
    """Runner name → its group (None: a lone sink with the default processor)."""
    out: dict[str, SinkGroupSpec | None] = dict(spec.sinkgroups)
    grouped = {m for g in spec.sinkgroups.values() for m in g.sinks}
    for s in spec.sinks:
        if s not in grouped:
            out[s] = None
    return out


def plan_reload(old: AgentSpec, new: AgentSpec) -> ReloadPlan:
    """Which components of `old` must stop to move to `new` (pure).

    A channel restarts when its spec changed or it is gone; a source when its spec
    changed, it is gone or one of its channels restarts; a sink likewise with its
    channel; a sink runner when its group changed or one of its sinks restarts.
    """
    ch = {n for n in old.channels if n not in new.channels or old.channels[n] != new.channels[n]}
    src = {
        n
        for n, s in old.sources.items()
        if n not in new.sources or s != new.sources[n] or set(s.channels) & ch
    }
    sinks = {
        n
        for n, s in old.sinks.items()
        if n not in new.sinks or s != new.sinks[n] or s.channel in ch
    }
    old_groups, new_groups = runner_groups(old), runner_groups(new)
    runners = {
        n
        for n, g in old_groups.items()
        if n not in new_groups or g != new_groups[n] or set(g.sinks if g else (n,)) & sinks
    }
    return ReloadPlan(frozenset(ch), frozenset(src), frozenset(sinks), frozenset(runners))


def _type_label(kind: str, type_name: str) -> str:
    """The short type name for metrics labels (a Flume class name becomes `netcat` ...)."""
    return registry.canonical(kind, type_name) or type_name


async def _start(component: Any, kind: str) -> None:
    """Start one component. Any error becomes a ComponentStartError naming it (a plugin's
    unexpected exception must not escape as a crash of the agent)."""
    try:
        await component.start()
    except ComponentStartError:
        component.state = LifecycleState.FAILED
        raise
    except (OSError, FlumedError, ValueError) as e:
        component.state = LifecycleState.FAILED
        raise ComponentStartError(f"{kind} {component.name} failed to start: {e}") from e
    except Exception as e:
        component.state = LifecycleState.FAILED
        log.exception("%s %s failed to start with an unexpected error.", kind, component.name)
        raise ComponentStartError(f"{kind} {component.name} failed to start: {e!r}") from e


async def _try_start(component: Any, kind: str, failures: list[str]) -> bool:
    """Start one component during a reload; a failure is stopped, noted and False."""
    try:
        await _start(component, kind)
    except ComponentStartError as e:
        failures.append(str(e))
        await _stop_all([component], deadline_after(DEFAULT_STOP_TIMEOUT))
        return False
    return True


async def _stop_all(components: Iterable[Any], deadline: float) -> None:
    """Stop components concurrently, each told the shared deadline; errors are logged."""

    async def one(c: Any) -> None:
        c.stop_deadline = deadline
        try:
            await c.stop()
        except Exception:
            log.exception("Component %s failed to stop cleanly.", c.name)

    await asyncio.gather(*(one(c) for c in components))
