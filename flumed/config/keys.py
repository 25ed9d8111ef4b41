"""Declaring and validating a component's configuration keys, in Flume's spelling.

A component declares a frozen dataclass whose fields are its keys::

    @dataclass(frozen=True, slots=True)
    class Config:
        capacity: int = key(100, ge=1)
        keep_alive: float = key(3.0, name="keep-alive", ge=0)
        mapping: dict[str, str] = prefix("selector.mapping")

`parse(Config, flat, where)` turns a flat mapping of dotted Flume keys into that
dataclass, converting the strings a `.properties` file gives, and raises one
ConfigError listing every unknown key, missing key and bad value. Nothing falls
back silently to a default on bad input.

The contract of such a dataclass is `ComponentConfig` below: besides its fields it may
declare `IGNORED`, `check()` and `claims()`, read only through `ignored_keys()`,
`config_problems()` and `config_claims()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, Protocol, TypeVar, get_args, get_origin

from flumed.errors import ConfigError

log = logging.getLogger("flumed.config")

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class ComponentConfig(Protocol):
    """What a component's Config dataclass may declare besides its keys (all optional).

    - `IGNORED`: Flume keys accepted for compatibility and warned about (`ignored()`).
    - `check()`: problems no single key shows (keys that contradict each other, a
      file format flumed cannot read), one message per problem, without the component's
      name (the caller prefixes it). Pure: no I/O, it runs in `flumed validate`.
    - `claims()`: what this component uses alone, as (resource, key) pairs such as
      ("tcp port 4141", "port") or ("directory /var/log/out", "sink.directory"): two
      components of one agent claiming one resource are refused (config/graph.py).
      Listening ports are claims too (`listen_claims()`), TCP or UDP as the component
      says; a port to connect to is not one.
    """

    IGNORED: ClassVar[Mapping[str, str]]

    def check(self) -> list[str]: ...

    def claims(self) -> list[tuple[str, str]]: ...


def ignored_keys(cls: type) -> Mapping[str, str]:
    """A Config class's IGNORED keys (none when it declares none)."""
    found: Mapping[str, str] = getattr(cls, "IGNORED", {})
    return found


def config_problems(config: object) -> list[str]:
    """What a Config's `check()` reports (nothing when it has none)."""
    check = getattr(config, "check", None)
    return list(check()) if check is not None else []


def config_claims(config: object) -> list[tuple[str, str]]:
    """A Config's `claims()` (none when it has none)."""
    claims = getattr(config, "claims", None)
    return list(claims()) if claims is not None else []


def listen_claims(
    port: int, transport: Literal["tcp", "udp"] = "tcp", key: str = "port"
) -> list[tuple[str, str]]:
    """The claim of a listening port: none for 0 (an ephemeral port, never shared)."""
    return [(f"{transport} port {port}", key)] if port else []


def port_of_claim(resource: str) -> tuple[Literal["tcp", "udp"], int] | None:
    """The transport and port of a claim made by `listen_claims()`, else None."""
    transport, sep, port = resource.partition(" port ")
    if not sep or not port.isdigit():
        return None
    if transport == "tcp":
        return "tcp", int(port)
    if transport == "udp":
        return "udp", int(port)
    return None


def key(
    default: Any = _MISSING,
    *,
    name: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    aliases: tuple[str, ...] = (),
    doc: str = "",
) -> Any:
    """Declare one key. `name` is the Flume key when it is not the field's name."""
    meta = {"name": name, "ge": ge, "le": le, "aliases": aliases, "doc": doc}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def prefix(name: str, *, doc: str = "") -> Any:
    """Declare a family of keys `name.*`, collected into a dict of the remainders."""
    meta = {"name": name, "prefix": True, "doc": doc}
    return dataclasses.field(default_factory=dict, metadata=meta)


def ignored(*names: str) -> dict[str, str]:
    """Flume keys accepted for compatibility that have no meaning here (warned about).

    A name ending in `.*` stands for every key under that prefix (Jetty's
    `HttpConfiguration.*`)."""
    return dict.fromkeys(names, "has no meaning in flumed and is ignored")


def flatten(section: Mapping[str, Any], base: str = "") -> dict[str, Any]:
    """Flatten nested tables into dotted keys, keeping order. Lists stay values."""
    out: dict[str, Any] = {}
    for k, v in section.items():
        full = f"{base}.{k}" if base else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, full))
        else:
            out[full] = v
    return out


def group_named(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Group `{"i1.type": x, "i1.regex": y, "i2.type": z}` by first segment, in order.

    A bare `{"f1": "/path"}` becomes `{"f1": {"": "/path"}}`.
    """
    groups: dict[str, dict[str, Any]] = {}
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        groups.setdefault(head, {})[rest] = v
    return groups


def convert_value(tp: Any, value: Any) -> Any:
    """Convert `value` to `tp`, accepting the strings of a properties file.

    Raises:
        ValueError: with a message saying what was expected.
    """
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return convert_value(args[0], value)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str):
            for c in choices:
                if isinstance(c, str) and c.lower() == value.lower():
                    return c
        raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError("expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError("expected a number")
    if tp is str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ValueError("expected a string")
    if origin is list:
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
            return [str(v) for v in value]
        raise ValueError("expected a list of strings")
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ValueError("expected a table")
    return value


def key_names(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The Flume key name of every field of a config dataclass."""
    return {f.metadata.get("name") or f.name: f for f in dataclasses.fields(cls)}


def renamed(pairs: Mapping[str, str]) -> dict[str, str]:
    """Deprecated Flume keys still read: old name -> the key it is read as (warned).

    As Flume 1.10's `translateOldProperties`: the old key is used only when the new one
    is absent."""
    return dict(pairs)


def _apply_renamed(
    flat: Mapping[str, Any], renames: Mapping[str, str], where: str
) -> dict[str, Any]:
    out = dict(flat)
    for old, new in renames.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in out:
            log.warning(
                "%s: key '%s' is deprecated and ignored, because '%s' is set.", where, old, new
            )
        else:
            log.warning("%s: key '%s' is deprecated; read as '%s' (use that).", where, old, new)
            out[new] = value
    return out


def _ignored_reason(k: str, skip: Mapping[str, str]) -> str | None:
    if k in skip:
        return skip[k]
    for name, why in skip.items():
        if name.endswith(".*") and k.startswith(name[:-1]):
            return why
    return None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest candidate (case-insensitive), else ''."""
    by_lower = {c.lower(): c for c in candidates}
    m = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.75)
    return f" (did you mean '{by_lower[m[0]]}'?)" if m else ""


def unknown_key(where: str, k: str, candidates: Iterable[str], strict: bool) -> str | None:
    """An unknown key: the error text when `strict`, else None after a warning.

    A Flume properties file runs on Flume with unknown keys ignored, so flumed warns
    there (strict = False); TOML and `validate --strict` refuse them."""
    hint = did_you_mean(k, candidates)
    if strict:
        return f"{where}: unknown key '{k}'{hint}"
    log.warning(
        "%s: unknown key '%s'%s: ignored, as Flume ignores it (validate --strict refuses it).",
        where,
        k,
        hint,
    )
    return None


def parse(cls: type[T], flat: Mapping[str, Any], where: str, *, strict: bool = True) -> T:
    """Build config dataclass `cls` from flat dotted keys.

    Every problem is collected: bad values, missing keys, unknown keys (errors when
    `strict`, else warnings, see `unknown_key`), and the config's own `check()` as long
    as every value converted. A substituted (`${...}`) value is shown as written.

    Raises:
        ConfigError: listing every problem, each prefixed with `where`.
    """
    from flumed.config.substitution import shown

    problems: list[str] = []
    hints = typing.get_type_hints(cls)
    skip = ignored_keys(cls)
    renames: Mapping[str, str] = getattr(cls, "RENAMED", {})
    if renames:
        flat = _apply_renamed(flat, renames, where)
    values: dict[str, Any] = {}
    used: set[str] = set()
    prefixes: list[tuple[str, dataclasses.Field[Any]]] = []
    known: list[str] = [k.removesuffix(".*") for k in skip]
    for fname, f in key_names(cls).items():
        known.extend((fname, *f.metadata.get("aliases", ())))
        if f.metadata.get("prefix"):
            prefixes.append((fname, f))
            continue
        names = (fname, *f.metadata.get("aliases", ()))
        found = [n for n in names if n in flat]
        if not found:
            if f.default is _MISSING and f.default_factory is _MISSING:
                problems.append(f"{where}: missing required key '{fname}'")
            continue
        used.update(found)
        raw = flat[found[0]]
        try:
            v = convert_value(hints[f.name], raw)
        except ValueError as e:
            problems.append(f"{where}: key '{found[0]}': {e}, got {shown(raw)}")
            continue
        ge, le = f.metadata.get("ge"), f.metadata.get("le")
        if ge is not None and v is not None and v < ge:
            problems.append(f"{where}: key '{found[0]}': must be >= {ge}, got {shown(raw)}")
            continue
        if le is not None and v is not None and v > le:
            problems.append(f"{where}: key '{found[0]}': must be <= {le}, got {shown(raw)}")
            continue
        values[f.name] = v
    # Longest prefix first, so `kafka.producer` wins over `kafka`.
    prefixes.sort(key=lambda p: -len(p[0]))
    for k in flat:
        if k in used:
            continue
        for pname, f in prefixes:
            if k == pname or k.startswith(pname + "."):
                values.setdefault(f.name, {})[k[len(pname) + 1 :]] = flat[k]
                used.add(k)
                break
    unknown: list[str] = []
    for k in flat:
        if k in used:
            continue
        why = _ignored_reason(k, skip)
        if why is not None:
            log.warning("%s: key '%s' %s.", where, k, why)
            continue
        err = unknown_key(where, k, known, strict)
        if err is not None:
            unknown.append(err)
    if problems:
        raise ConfigError(problems + unknown)
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError([*unknown, f"{where}: {e}"]) from None
    errs = config_problems(obj)
    notes = getattr(obj, "notes", None)
    for note in notes() if notes is not None else []:
        log.warning("%s: %s", where, note)
    if errs or unknown:
        raise ConfigError(unknown + [f"{where}: {e}" for e in errs])
    return obj
