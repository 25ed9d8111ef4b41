"""Channel selectors: `replicating` and `multiplexing`, with Flume's keys.

A selector sees a source's flat `selector.*` keys (without the `selector.` prefix)
and answers, per event, which channels are required and which optional.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flumed.channels.base import Channel
from flumed.config.keys import key, prefix
from flumed.event import Event


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    type: Literal["replicating", "multiplexing", "load_balancing"] = key("replicating")
    header: str = key("flume.selector.header", doc="multiplexing: the header to route on")
    mapping: dict[str, Any] = prefix("mapping", doc="multiplexing: header value → channels")
    optional: dict[str, Any] = prefix("optional", doc="channels whose failure is only logged")
    default: list[str] = key([], doc="multiplexing: channels for an unmapped value")
    policy: Literal["round_robin", "random"] = key(
        "round_robin", doc="load_balancing: how each event's one channel is chosen"
    )

    def channel_names(self) -> set[str]:
        names = set(self.default)
        for v in (*self.mapping.values(), *self.optional.values()):
            names.update(str(v).split() if isinstance(v, str) else v)
        return names


def _names(v: Any) -> list[str]:
    return v.split() if isinstance(v, str) else [str(x) for x in v]


Route = tuple[tuple[Channel, ...], tuple[Channel, ...]]


class ChannelSelector:
    """Picks channels for events. `route()` groups a batch by (required, optional)."""

    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels = list(channels)

    def route(self, events: list[Event]) -> list[tuple[Route, list[Event]]]:
        raise NotImplementedError


class ReplicatingSelector(ChannelSelector):
    """Every event to every channel; channels named in `selector.optional` are optional.

    In Flume, replicating's `selector.optional` is a space-separated list of channels.
    """

    def __init__(self, channels: Sequence[Channel], config: SelectorConfig) -> None:
        super().__init__(channels)
        optional: set[str] = set()
        for k, v in config.optional.items():
            # `selector.optional = c2 c3` arrives as {"": "c2 c3"} via the prefix table.
            optional.update(_names(v) if k == "" else [])
        self._route: Route = (
            tuple(c for c in channels if c.name not in optional),
            tuple(c for c in channels if c.name in optional),
        )

    def route(self, events: list[Event]) -> list[tuple[Route, list[Event]]]:
        return [(self._route, events)]


class MultiplexingSelector(ChannelSelector):
    """Route on the value of `selector.header`: `selector.mapping.<value>` channels are
    required, `selector.optional.<value>` optional; `selector.default` for unmapped
    values (and, as in Flume, an unmapped value with no default goes nowhere required).
    """

    def __init__(self, channels: Sequence[Channel], config: SelectorConfig) -> None:
        super().__init__(channels)
        by_name = {c.name: c for c in channels}
        self.header = config.header
        self._routes: dict[str, Route] = {}
        values = set(config.mapping) | {k for k in config.optional if k}
        for value in values:
            req = tuple(by_name[n] for n in _names(config.mapping.get(value, [])))
            if not req:
                req = tuple(by_name[n] for n in config.default)
            opt = tuple(
                by_name[n] for n in _names(config.optional.get(value, [])) if by_name[n] not in req
            )
            self._routes[value] = (req, opt)
        default = tuple(by_name[n] for n in config.default)
        self._default: Route = (default, ())

    def route(self, events: list[Event]) -> list[tuple[Route, list[Event]]]:
        header = self.header
        routes = self._routes
        default = self._default
        groups: dict[int, tuple[Route, list[Event]]] = {}
        for e in events:
            r = routes.get(e.headers.get(header, ""), default)
            g = groups.get(id(r))
            if g is None:
                groups[id(r)] = (r, [e])
            else:
                g[1].append(e)
        return list(groups.values())


class LoadBalancingSelector(ChannelSelector):
    """Each event to exactly one of the channels (Flume 1.10's LoadBalancingChannelSelector):
    `selector.policy = round_robin` (event after event, continuing across batches) or
    `random`. Every chosen channel is required: a full one refuses the batch.
    """

    def __init__(self, channels: Sequence[Channel], config: SelectorConfig) -> None:
        super().__init__(channels)
        self.policy = config.policy
        self._next = 0
        self._rng = random.Random()

    def route(self, events: list[Event]) -> list[tuple[Route, list[Event]]]:
        n = len(self.channels)
        if self.policy == "round_robin":
            start = self._next
            self._next = (start + len(events)) % n
            # Event i goes to channel (start + i) % n: whole slices, no per-event routing.
            slices = [((start + k) % n, events[k::n]) for k in range(min(n, len(events)))]
        else:
            picks: dict[int, list[Event]] = {}
            choose = self._rng.randrange
            for e in events:
                picks.setdefault(choose(n), []).append(e)
            slices = list(picks.items())
        return [(((self.channels[i],), ()), batch) for i, batch in slices if batch]


def build_selector(channels: Sequence[Channel], config: SelectorConfig) -> ChannelSelector:
    if config.type == "multiplexing":
        return MultiplexingSelector(channels, config)
    if config.type == "load_balancing":
        return LoadBalancingSelector(channels, config)
    return ReplicatingSelector(channels, config)
