"""From a loaded document to a checked agent graph (pure: no sockets, no files).

`build_agent(doc, agent, where)` resolves every component's type, parses its keys
with its own Config, checks the cross-references, and raises one ConfigError that
lists every problem found, each naming the file, the agent, the component and the key.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flumed import registry
from flumed.config.keys import config_claims, flatten, group_named, parse, unknown_key
from flumed.errors import ConfigError
from flumed.routing.selectors import SelectorConfig

log = logging.getLogger("flumed.config")


@dataclass(frozen=True)
class ComponentSpec:
    """One configured component: its class, parsed Config, and raw keys (for reload)."""

    name: str
    type: str
    cls: builtins.type[Any]
    config: Any
    raw: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class InterceptorSpec:
    name: str
    cls: type
    config: Any


@dataclass(frozen=True)
class SourceSpec(ComponentSpec):
    channels: tuple[str, ...] = ()
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    interceptors: tuple[InterceptorSpec, ...] = ()


@dataclass(frozen=True)
class SinkSpec(ComponentSpec):
    channel: str = ""


@dataclass(frozen=True)
class SinkGroupSpec:
    name: str
    sinks: tuple[str, ...]
    processor_cls: type
    config: Any
    raw: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class AgentSpec:
    name: str
    sources: dict[str, SourceSpec]
    channels: dict[str, ComponentSpec]
    sinks: dict[str, SinkSpec]
    sinkgroups: dict[str, SinkGroupSpec]
    #: Agent-level `workers`: processes running this graph (flumed.workers).
    workers: int = 1


def _freeze(flat: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in flat.items())


def _section(
    agent: Mapping[str, Any], name: str, problems: list[str], where: str
) -> dict[str, Any]:
    sec = agent.get(name, {})
    if isinstance(sec, str):  # `a1.sinks = k1 k2` listed with no keys at all
        return {n: {} for n in sec.split()}
    if not isinstance(sec, Mapping):
        problems.append(f"{where}: '{name}' must be a table of components")
        return {}
    return dict(sec)


def _names(v: Any, where: str = "", key: str = "") -> list[str]:
    if isinstance(v, str):
        if "," in v:
            log.warning(
                "%s: key '%s' = %r: Flume splits names on whitespace only, so it would look "
                "for a name %r (comma included) and not find it; flumed reads the commas "
                "as separators.",
                where,
                key,
                v,
                v.split()[0],
            )
        return v.replace(",", " ").split()
    if isinstance(v, list):
        return [str(x) for x in v]
    return []


def agent_names(doc: Mapping[str, Any]) -> list[str]:
    agents = doc.get("agents")
    return list(agents) if isinstance(agents, Mapping) else []


def _component(
    kind: str,
    name: str,
    section: Any,
    where: str,
    problems: list[str],
    drop: tuple[str, ...],
    strict: bool = True,
) -> tuple[ComponentSpec | None, dict[str, Any]]:
    """Resolve and parse one component; returns its spec and its full flat keys."""
    cwhere = f"{where}: {kind[:-1]} {name}"
    if not isinstance(section, Mapping):
        problems.append(f"{cwhere}: must be a table of keys")
        return None, {}
    flat = flatten(section)
    t = flat.get("type")
    if not isinstance(t, str) or not t:
        problems.append(f"{cwhere}: missing required key 'type'")
        return None, flat
    try:
        cls = registry.resolve(kind, t, _base(kind))
    except registry.UnknownTypeError as e:
        problems.append(f"{cwhere}: key 'type': {e}")
        return None, flat
    own = {
        k: v
        for k, v in flat.items()
        if k != "type" and not any(k == d or k.startswith(d + ".") for d in drop)
    }
    try:
        config = parse(cls.Config, own, cwhere, strict=strict)
    except ConfigError as e:
        problems.extend(e.problems)
        return None, flat
    return ComponentSpec(name, t, cls, config, _freeze(flat)), flat


def _base(kind: str) -> type:
    """The class every component of `kind` must derive from (imported here: runtime classes
    are only needed once a type is resolved)."""
    from flumed.channels.base import Channel
    from flumed.interceptors.base import Interceptor
    from flumed.sinks.base import Sink
    from flumed.sinks.runner import SinkProcessor
    from flumed.sources.base import Source

    bases: dict[str, type] = {
        "sources": Source,
        "channels": Channel,
        "sinks": Sink,
        "interceptors": Interceptor,
        "sinkprocessors": SinkProcessor,
    }
    return bases[kind]


def build_agent(
    doc: Mapping[str, Any], agent: str | None, where: str, *, strict: bool = True
) -> AgentSpec:
    """Check and build one agent of a document.

    `strict = False` (a Flume properties file, without `validate --strict`) makes an
    unknown key a warning, as Flume ignores it; otherwise it is an error.

    Raises:
        ConfigError: every problem found.
    """
    names = agent_names(doc)
    if agent is None:
        if len(names) != 1:
            raise ConfigError(
                f"{where}: the file holds {len(names)} agents ({', '.join(names) or 'none'}); "
                "pick one with -n NAME"
            )
        agent = names[0]
    if agent not in names:
        raise ConfigError(
            f"{where}: no agent named {agent!r} (agents in the file: {', '.join(names) or 'none'})"
        )
    a = doc["agents"][agent]
    where = f"{where}: agent {agent}"
    problems: list[str] = []
    if not isinstance(a, Mapping):
        raise ConfigError(f"{where}: must be a table")
    sections = ("sources", "channels", "sinks", "sinkgroups", "configfilters", "workers")
    for k in a:
        if k not in sections:
            err = unknown_key(where, k, sections, strict)
            if err is not None:
                problems.append(err)
    workers = _workers(a.get("workers", 1), where, problems)

    channels: dict[str, ComponentSpec] = {}
    for name, sec in _section(a, "channels", problems, where).items():
        spec, _ = _component("channels", name, sec, where, problems, (), strict)
        if spec is not None:
            channels[name] = spec
    declared_channels = set(_section(a, "channels", [], where))

    sources: dict[str, SourceSpec] = {}
    for name, sec in _section(a, "sources", problems, where).items():
        swhere = f"{where}: source {name}"
        spec, flat = _component(
            "sources", name, sec, where, problems, ("channels", "selector", "interceptors"), strict
        )
        chans = _names(flat.get("channels"), swhere, "channels")
        if not chans:
            problems.append(f"{swhere}: missing required key 'channels' (a source needs a channel)")
        for c in chans:
            if c not in declared_channels:
                problems.append(f"{swhere}: key 'channels': no channel named {c!r}")
        sel_flat = {k[9:]: v for k, v in flat.items() if k.startswith("selector.")}
        if isinstance(sel_flat.get("type"), str):
            # Flume's class names (ReplicatingChannelSelector ...) name the same selectors.
            short = registry.canonical("selectors", sel_flat["type"])
            if short is not None:
                sel_flat["type"] = short
        selector = SelectorConfig()
        try:
            selector = parse(SelectorConfig, sel_flat, f"{swhere}: selector", strict=strict)
            for c in sorted(selector.channel_names() - set(chans)):
                problems.append(
                    f"{swhere}: selector names channel {c!r}, which is not in the source's channels"
                )
        except ConfigError as e:
            problems.extend(e.problems)
        icpts: list[InterceptorSpec] = []
        i_flat = {k[13:]: v for k, v in flat.items() if k.startswith("interceptors.")}
        if isinstance(flat.get("interceptors"), str) and not i_flat:
            problems.append(f"{swhere}: interceptors {flat['interceptors']!r} have no settings")
        for iname, ikeys in group_named(i_flat).items():
            iwhere = f"{swhere}: interceptor {iname}"
            itype = ikeys.get("type")
            if not isinstance(itype, str):
                problems.append(f"{iwhere}: missing required key 'type'")
                continue
            try:
                icls = registry.resolve("interceptors", itype, _base("interceptors"))
                iconf = parse(
                    icls.Config,
                    {k: v for k, v in ikeys.items() if k != "type"},
                    iwhere,
                    strict=strict,
                )
                icpts.append(InterceptorSpec(iname, icls, iconf))
            except registry.UnknownTypeError as e:
                problems.append(f"{iwhere}: key 'type': {e}")
            except ConfigError as e:
                problems.extend(e.problems)
        if spec is not None:
            sources[name] = SourceSpec(
                spec.name,
                spec.type,
                spec.cls,
                spec.config,
                spec.raw,
                channels=tuple(chans),
                selector=selector,
                interceptors=tuple(icpts),
            )

    sinks: dict[str, SinkSpec] = {}
    declared_sinks = set(_section(a, "sinks", [], where))
    for name, sec in _section(a, "sinks", problems, where).items():
        spec, flat = _component("sinks", name, sec, where, problems, ("channel",), strict)
        ch = flat.get("channel")
        if not isinstance(ch, str) or not ch:
            problems.append(f"{where}: sink {name}: missing required key 'channel'")
            ch = ""
        elif ch not in declared_channels:
            problems.append(f"{where}: sink {name}: key 'channel': no channel named {ch!r}")
        if spec is not None:
            sinks[name] = SinkSpec(
                spec.name, spec.type, spec.cls, spec.config, spec.raw, channel=ch
            )

    groups: dict[str, SinkGroupSpec] = {}
    grouped: dict[str, str] = {}
    for name, sec in _section(a, "sinkgroups", problems, where).items():
        gwhere = f"{where}: sinkgroup {name}"
        flat = flatten(sec) if isinstance(sec, Mapping) else {}
        members = _names(flat.get("sinks"), gwhere, "sinks")
        if not members:
            problems.append(f"{gwhere}: missing required key 'sinks'")
        for s in members:
            if s not in declared_sinks:
                problems.append(f"{gwhere}: key 'sinks': no sink named {s!r}")
            elif s in grouped:
                problems.append(f"{gwhere}: sink {s!r} is already in sinkgroup {grouped[s]!r}")
            else:
                grouped[s] = name
        pflat = {k[10:]: v for k, v in flat.items() if k.startswith("processor.")}
        for k in flat:
            if k != "sinks" and not k.startswith("processor."):
                err = unknown_key(gwhere, k, ("sinks", "processor.type"), strict)
                if err is not None:
                    problems.append(err)
        ptype = str(pflat.get("type", "default"))
        short = registry.canonical("sinkprocessors", ptype)
        if short is not None and "type" in pflat:
            # Flume's class names (FailoverSinkProcessor ...) name the same processors.
            pflat["type"] = ptype = short
        try:
            pcls = registry.resolve("sinkprocessors", ptype, _base("sinkprocessors"))
        except registry.UnknownTypeError as e:
            problems.append(f"{gwhere}: key 'processor.type': {e}")
            continue
        pconf = None
        if pcls.Config is not None:
            try:
                pconf = parse(pcls.Config, pflat, f"{gwhere}: processor", strict=strict)
            except ConfigError as e:
                problems.extend(e.problems)
                continue
        elif set(pflat) - {"type"}:
            problems.append(f"{gwhere}: processor {ptype} takes no keys")
        groups[name] = SinkGroupSpec(name, tuple(members), pcls, pconf, _freeze(flat))

    _check_resources(sources, where, problems, channels, sinks)
    if problems:
        raise ConfigError(problems)
    used = {c for s in sources.values() for c in s.channels} | {s.channel for s in sinks.values()}
    for c in channels:
        if c not in used:
            log.warning("%s: channel %s is connected to nothing.", where, c)
    return AgentSpec(agent, sources, channels, sinks, groups, workers)


def _workers(value: Any, where: str, problems: list[str]) -> int:
    """The agent-level key `workers` (TOML integer, or a properties string)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        problems.append(f"{where}: key 'workers': {value!r} is not a number of processes (1-256)")
        return 1
    return value


def _check_resources(
    sources: Mapping[str, SourceSpec],
    where: str,
    problems: list[str],
    channels: Mapping[str, ComponentSpec] | None = None,
    sinks: Mapping[str, ComponentSpec] | None = None,
) -> None:
    """No two components may claim one port, directory or file (Vector's `resources()`).

    What a component claims is its Config's `claims()` (config.keys.ComponentConfig):
    (resource, key) pairs such as ("directory /var/spool/x", "spoolDir") or
    ("udp port 514", "port").
    """
    seen: dict[str, str] = {}

    def claim(resource: str, owner: str, key: str) -> None:
        if resource in seen:
            problems.append(
                f"{where}: {owner}: key '{key}': {resource} is already used by {seen[resource]}"
            )
        else:
            seen[resource] = owner

    specs: list[tuple[str, ComponentSpec]] = [(f"source {n}", s) for n, s in sources.items()]
    specs += [(f"channel {n}", c) for n, c in (channels or {}).items()]
    specs += [(f"sink {n}", c) for n, c in (sinks or {}).items()]
    for owner, s in specs:
        for resource, key in config_claims(s.config):
            claim(resource, owner, key)
