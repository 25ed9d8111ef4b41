"""Apache Flume `.properties` files: parsing, nesting into the TOML shape, and TOML output.

A Flume file is flat: `a1.sources.r1.interceptors = i1 i2` beside
`a1.sources.r1.interceptors.i1.type = timestamp`. TOML cannot hold a value and a
table under one key, so where a key has both, the value is read as the list of
names and becomes a table of those names, in that order (DESIGN.md, Configuration).
Names not in the list are left out, as Flume leaves out unlisted components.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java properties text into an ordered flat dict (last value wins)."""
    out: dict[str, str] = {}
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not buf and (not line or line[0] in "#!"):
            continue
        # A line continues when it ends with an odd number of backslashes.
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            buf += line[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    for line in logical:
        m = re.match(r"((?:\\.|[^=:\s\\])+)\s*[=:\s]\s*(.*)$", line)
        if m is None:
            k, v = line, ""
        else:
            k, v = m.group(1), m.group(2)
        out[_unescape(k)] = _unescape(v).strip()
    return out


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s

    def rep(m: re.Match[str]) -> str:
        c = m.group(1)
        if c.startswith("u"):
            return chr(int(c[1:], 16))
        return _ESCAPES.get(c, c)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", rep, s)


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.value: str | None = None
        self.children: dict[str, _Node] = {}


def _to_plain(node: _Node, depth: int = 0) -> Any:
    if not node.children:
        return node.value
    names = node.value.split() if node.value is not None else None
    # depth 2 is a section list (a1.sinks), depth 3 a component: names are components.
    partial = depth > 3 and not set(names or ()) <= set(node.children)
    if names is not None and (not set(names) & set(node.children) or partial):
        # Not a list of names (e.g. kafka.topics beside kafka.topics.regex), or a list
        # naming some with no keys of their own (encryption.keyProvider.keys = k0 k1
        # beside keys.k0.passwordFile): keep the value and the children side by side.
        table: dict[str, Any] = {"": node.value}
        for k, child in node.children.items():
            table[k] = _to_plain(child, depth + 1)
        return table
    table = {}
    order = names if names is not None else list(node.children)
    for k in order:
        found = node.children.get(k)
        table[k] = _to_plain(found, depth + 1) if found is not None else {}
    return table


def nest(flat: dict[str, str]) -> dict[str, Any]:
    """Turn flat dotted keys into the nested TOML shape (see module docstring)."""
    root = _Node()
    for k, v in flat.items():
        node = root
        for part in k.split("."):
            node = node.children.setdefault(part, _Node())
        node.value = v
    out = _to_plain(root)
    return out if isinstance(out, dict) else {}


def _fix_empty_keys(d: Any) -> Any:
    """`{"topics": {"": "a", "regex": "b"}}` → `{"topics": "a", "topics.regex": "b"}`."""
    if not isinstance(d, dict):
        return d
    out: dict[str, Any] = {}
    for k, v in d.items():
        v = _fix_empty_keys(v)
        if isinstance(v, dict) and "" in v:
            out[k] = v[""]
            for ck, cv in v.items():
                if ck:
                    out[f"{k}.{ck}"] = cv
        else:
            out[k] = v
    return out


SECTIONS = ("sources", "channels", "sinks", "sinkgroups", "configfilters")
_NAME_LISTS = ("channels", "sinks", "interceptors", "serializers")


def split_names(value: str) -> list[str]:
    """Names of a list line: whitespace-separated, commas also taken as separators."""
    return value.replace(",", " ").split()


def _comma_note(key: str, value: str) -> str:
    first = value.split()[0] if value.split() else value
    return (
        f"'{key} = {value}': Flume splits names on whitespace only, so it would look for "
        f"a name {first!r} (comma included), find nothing under it and not use it, nor "
        f"{first.strip(',')!r}, which the line then does not name; flumed reads the commas "
        "as separators"
    )


def _flume_lists(flat: dict[str, str], warnings: list[str]) -> dict[str, str]:
    """Apply Flume's list lines to a flat file: components under an agent's section are
    used only when that section's list line names them (Flume's FlumeConfiguration).
    Lists written with commas are read as lists, with a warning."""
    agents: dict[str, None] = {}
    for k in flat:
        agents.setdefault(k.split(".", 1)[0], None)
    drop: set[str] = set()
    out = dict(flat)
    for k, v in flat.items():
        parts = k.split(".")
        if "," in v and (
            (len(parts) == 2 and parts[1] in SECTIONS)
            or (len(parts) >= 4 and parts[-1] in _NAME_LISTS and parts[1] != "configfilters")
        ):
            warnings.append(f"agent {parts[0]}: {_comma_note(k, v)}")
            out[k] = " ".join(split_names(v))
    for a in agents:
        for section in SECTIONS:
            list_key = f"{a}.{section}"
            defined: dict[str, None] = {}
            for k in flat:
                if k.startswith(list_key + "."):
                    defined.setdefault(k[len(list_key) + 1 :].split(".", 1)[0], None)
            if not defined:
                continue
            listed = set(split_names(out[list_key])) if list_key in out else None
            unused = [n for n in defined if listed is None or n not in listed]
            if not unused:
                continue
            kind = section[:-1]
            if listed is None:
                warnings.append(
                    f"agent {a}: no line '{list_key} = ...' names the {section}, so Flume "
                    f"uses none of them, and neither does flumed: {kind} "
                    + ", ".join(unused)
                    + f" ignored (add '{list_key} = {' '.join(unused)}' to use them)"
                )
            else:
                warnings.append(
                    f"agent {a}: {kind} {', '.join(unused)} not named in '{list_key}', so "
                    "Flume ignores it, and so does flumed"
                )
            for n in unused:
                drop.add(f"{list_key}.{n}")
    return {k: v for k, v in out.items() if not any(k == d or k.startswith(d + ".") for d in drop)}


def properties_to_document(text: str, warnings: list[str] | None = None) -> dict[str, Any]:
    """A Flume properties file as flumed's document: `{"agents": {name: {...}}}`.

    Plain `NAME = value` lines (no dot) are variables for `${NAME}` (`"vars"`).
    What Flume would read differently is appended to `warnings` (when given).
    """
    flat = parse_properties(text)
    variables = {k: v for k, v in flat.items() if "." not in k}
    notes: list[str] = [] if warnings is None else warnings
    dotted = _flume_lists({k: v for k, v in flat.items() if "." in k}, notes)
    agents = _fix_empty_keys(nest(dotted))
    for agent in agents.values():
        if not isinstance(agent, dict):
            continue
        for section in SECTIONS:
            names = agent.get(section)
            if isinstance(names, str):  # `a1.channels = c1` with no keys under c1
                agent[section] = {n: {} for n in split_names(names)}
    doc: dict[str, Any] = {"agents": agents}
    if variables:
        doc["vars"] = variables
    return doc


# -- TOML output -------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_LIST_KEYS = {"channels", "sinks"}
_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?\d+\.\d+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(k: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(k, x) for x in v) + "]"
    s = str(v)
    leaf = k.rsplit(".", 1)[-1]
    if leaf in _LIST_KEYS:
        return "[" + ", ".join(json.dumps(x) for x in s.split()) + "]"
    if _INT.match(s) and len(s) < 16:
        return s
    if _FLOAT.match(s):
        return s
    if s.lower() in ("true", "false"):
        return s.lower()
    if "\\" in s and "'" not in s and "\n" not in s:
        return f"'{s}'"  # literal string: regexes stay readable
    return json.dumps(s, ensure_ascii=False)


def to_toml(doc: dict[str, Any]) -> str:
    """Render a document as TOML: one table per component, scalars as keys."""
    lines: list[str] = []

    def emit(path: list[str], table: dict[str, Any]) -> None:
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        if scalars or not tables:
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
            for k, v in scalars:
                lines.append(f"{_key(k)} = {_value(k, v)}")
        for k, v in tables:
            emit([*path, k], v)

    if doc.get("vars"):
        emit(["vars"], doc["vars"])
    for name, agent in doc.get("agents", {}).items():
        if not isinstance(agent, dict):
            continue
        for section in SECTIONS:
            comps = agent.get(section) or {}
            if isinstance(comps, str):  # a list line whose components have no keys
                comps = {n: {} for n in split_names(comps)}
            for cname, comp in comps.items():
                emit(["agents", name, section, cname], comp if isinstance(comp, dict) else {})
        rest = {k: v for k, v in agent.items() if k not in SECTIONS}
        if rest:
            emit(["agents", name], rest)
    return "\n".join(lines) + "\n"
