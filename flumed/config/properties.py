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


def _to_plain(node: _Node) -> Any:
    if not node.children:
        return node.value
    names = node.value.split() if node.value is not None else None
    if names is not None and not set(names) & set(node.children):
        # Not a list of names (e.g. kafka.topics beside kafka.topics.regex): keep the
        # value and the children side by side as dotted keys.
        table: dict[str, Any] = {"": node.value}
        for k, child in node.children.items():
            table[k] = _to_plain(child)
        return table
    table = {}
    order = names if names is not None else list(node.children)
    for k in order:
        found = node.children.get(k)
        table[k] = _to_plain(found) if found is not None else {}
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


def properties_to_document(text: str) -> dict[str, Any]:
    """A Flume properties file as flumed's document: `{"agents": {name: {...}}}`."""
    return {"agents": _fix_empty_keys(nest(parse_properties(text)))}


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

    for name, agent in doc.get("agents", {}).items():
        for section in ("sources", "channels", "sinks", "sinkgroups"):
            for cname, comp in (agent.get(section) or {}).items():
                emit(["agents", name, section, cname], comp if isinstance(comp, dict) else {})
        rest = {
            k: v
            for k, v in agent.items()
            if k not in ("sources", "channels", "sinks", "sinkgroups")
        }
        if rest:
            emit(["agents", name], rest)
    return "\n".join(lines) + "\n"
