"""One agent: builds the graph from an AgentSpec, starts, stops and reloads it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from flumed import registry
from flumed.channels.base import Channel
from flumed.config.graph import AgentSpec, SinkGroupSpec
from flumed.counters import Counter
from flumed.errors import ComponentStartError, FlumedError
from flumed.lifecycle import LifecycleState
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

    def _make_sink(self, name: str) -> Sink:
        s = self.spec.sinks[name]
        sink: Sink = s.cls(name, s.config)
        sink.counter.component_type = _type_label("sinks", s.type)
        sink.channel = self.channels[s.channel]
        return sink

    def _make_source(self, name: str) -> Source:
        s = self.spec.sources[name]
        src: Source = s.cls(name, s.config)
        src.counter.component_type = _type_label("sources", s.type)
        chans = [self.channels[c] for c in s.channels]
        icpts = [i.cls(i.name, i.config) for i in s.interceptors]
        src.processor = ChannelProcessor(build_selector(chans, s.selector), icpts)
        return src

    def _groups(self) -> dict[str, SinkGroupSpec | None]:
        """Runner name → its group (None: a lone sink with the default processor)."""
        out: dict[str, SinkGroupSpec | None] = dict(self.spec.sinkgroups)
        grouped = {m for g in self.spec.sinkgroups.values() for m in g.sinks}
        for s in self.spec.sinks:
            if s not in grouped:
                out[s] = None
        return out

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
        """Stop sources, let sinks drain within the grace period, stop sinks, channels."""
        await _stop_all(self.sources.values())
        await asyncio.gather(*(r.stop(self.grace) for r in self.runners.values()))
        await _stop_all(self.sinks.values())
        await _stop_all(self.channels.values())
        self.sources.clear()
        self.runners.clear()
        self.sinks.clear()
        self.channels.clear()
        log.info("Agent %s stopped.", self.name)

    async def reload(self, new: AgentSpec) -> None:
        """Move to `new`: unchanged components keep running, changed ones restart.

        A changed channel hands its queued events to its successor (`adopt`), so
        nothing committed is lost.

        Raises:
            ComponentStartError: a new component failed to start (the rest runs on).
        """
        old = self.spec
        ch_changed = {
            n for n in old.channels if n not in new.channels or old.channels[n] != new.channels[n]
        }
        src_restart = {
            n
            for n, s in old.sources.items()
            if n not in new.sources or s != new.sources[n] or set(s.channels) & ch_changed
        }
        sink_restart = {
            n
            for n, s in old.sinks.items()
            if n not in new.sinks or s != new.sinks[n] or s.channel in ch_changed
        }
        old_groups = self._groups()
        self.spec = new
        new_groups = self._groups()
        run_restart = {
            n
            for n, g in old_groups.items()
            if n not in new_groups
            or g != new_groups[n]
            or set(g.sinks if g else (n,)) & sink_restart
        }
        log.info(
            "Reloading agent %s: restarting sources %s, sinks %s, channels %s.",
            self.name,
            sorted(src_restart) or "none",
            sorted(sink_restart) or "none",
            sorted(ch_changed) or "none",
        )
        await _stop_all([self.sources.pop(n) for n in src_restart])
        runners = [self.runners.pop(n) for n in run_restart if n in self.runners]
        # Runners being replaced only finish their current batch: no draining.
        await asyncio.gather(*(r.stop(self.grace, drain=False) for r in runners))
        await _stop_all([self.sinks.pop(n) for n in sink_restart])
        retired: list[Channel] = []
        fresh: list[Channel] = []
        for n in ch_changed:
            oldch = self.channels.pop(n)
            if n in new.channels:
                self.channels[n] = ch = self._make_channel(n)
                fresh.append(ch)
                adopt = getattr(ch, "adopt", None)
                if adopt is not None:
                    adopt(oldch)
                elif oldch.size:
                    log.info("Channel %s restarts; its %d events stay in its store.", n, oldch.size)
            elif oldch.size:
                log.warning("Channel %s was removed holding %d events.", n, oldch.size)
            retired.append(oldch)
        # The old channel releases its store (a file channel's lock) before the new opens it.
        await _stop_all(retired)
        for n in new.channels:
            if n not in self.channels:
                self.channels[n] = ch = self._make_channel(n)
                fresh.append(ch)
        for ch in fresh:
            await _start(ch, "channel")
        for n in new.sinks:
            if n not in self.sinks:
                self.sinks[n] = sink = self._make_sink(n)
                await _start(sink, "sink")
        for n, g in new_groups.items():
            if n not in self.runners:
                self.runners[n] = r = self._make_runner(n, g)
                r.start()
        for n in new.sources:
            if n not in self.sources:
                self.sources[n] = src = self._make_source(n)
                await _start(src, "source")
        log.info("Agent %s reloaded.", self.name)

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


def _type_label(kind: str, type_name: str) -> str:
    """The short type name for metrics labels (a Flume class name becomes `netcat` ...)."""
    return registry.canonical(kind, type_name) or type_name


async def _start(component: Any, kind: str) -> None:
    try:
        await component.start()
    except ComponentStartError:
        component.state = LifecycleState.FAILED
        raise
    except (OSError, FlumedError, ValueError) as e:
        component.state = LifecycleState.FAILED
        raise ComponentStartError(f"{kind} {component.name} failed to start: {e}") from e


async def _stop_all(components: Iterable[Any]) -> None:
    for c in components:
        try:
            await c.stop()
        except Exception:
            log.exception("Component %s failed to stop cleanly.", c.name)
