"""Java regex and replacement syntax, as Flume's interceptors take them, in Python's `re`.

Flume compiles `regex`, `matching` and `searchPattern` with java.util.regex. Python's
`re` reads the same syntax for everything a log pattern commonly uses; the differences
handled here are Java's named groups `(?<name>...)` / `\\k<name>` and the replacement
string syntax of `Matcher.replaceAll` (`$1`, `${name}`, `\\$`).
"""

from __future__ import annotations

import re

# `(?<name>` but not the lookbehinds `(?<=` / `(?<!`; skip escaped parentheses.
_NAMED_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\(\?<([A-Za-z][A-Za-z0-9]*)>")
_BACKREF = re.compile(r"(?<!\\)((?:\\\\)*)\\k<([A-Za-z][A-Za-z0-9]*)>")


def translate(pattern: str) -> str:
    """A Java regex as a Python one (named groups and named back-references)."""
    if "(?<" in pattern:
        pattern = _NAMED_GROUP.sub(r"\1(?P<\2>", pattern)
    if "\\k<" in pattern:
        pattern = _BACKREF.sub(r"\1(?P=\2)", pattern)
    return pattern


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Java regex. Raises re.error."""
    return re.compile(translate(pattern))


def regex_problem(key: str, pattern: str) -> list[str]:
    """`[]` when `pattern` compiles, else one problem naming `key` (for Config.check)."""
    try:
        compile_regex(pattern)
    except re.error as e:
        return [f"key '{key}': invalid regular expression {pattern!r}: {e}"]
    return []


def replacement(template: str, pattern: re.Pattern[str]) -> str:
    """Java `Matcher.replaceAll` replacement syntax as a Python `re.sub` template.

    `$n` takes as many digits as still name a group (Java's rule), `${name}` a named
    group, and a backslash quotes the next character.

    Raises:
        ValueError: a group that does not exist, or a dangling `\\` or `$`.
    """
    out: list[str] = []
    i, n = 0, len(template)
    groups = pattern.groups
    while i < n:
        c = template[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("character to be escaped is missing at the end")
            out.append(template[i + 1].replace("\\", "\\\\"))
            i += 2
        elif c == "$":
            i += 1
            if i < n and template[i] == "{":
                end = template.find("}", i)
                if end < 0:
                    raise ValueError("named group reference is missing its '}'")
                name = template[i + 1 : end]
                if name not in pattern.groupindex:
                    raise ValueError(f"no group named {name!r}")
                out.append(f"\\g<{name}>")
                i = end + 1
            elif i < n and template[i].isdigit():
                ref = int(template[i])
                if ref > groups:
                    raise ValueError(f"no group {ref} (the pattern has {groups})")
                i += 1
                while i < n and template[i].isdigit() and ref * 10 + int(template[i]) <= groups:
                    ref = ref * 10 + int(template[i])
                    i += 1
                out.append(f"\\g<{ref}>")
            else:
                raise ValueError("'$' must be followed by a group number or {name}")
        else:
            out.append(c)
            i += 1
    return "".join(out)
