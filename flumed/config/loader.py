"""Reading a configuration file: TOML, or an Apache Flume `.properties` file."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flumed.config.properties import properties_to_document
from flumed.config.substitution import resolve_document
from flumed.errors import ConfigError

log = logging.getLogger("flumed.config")


def is_properties(path: Path, text: str) -> bool:
    """Chosen by extension, then by content: TOML has `[tables]`, properties do not."""
    if path.suffix == ".properties":
        return True
    if path.suffix == ".toml":
        return False
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", "!")):
            continue
        return not s.startswith("[")
    return False


@dataclass(frozen=True)
class Loaded:
    """A loaded file: the document (`${...}` resolved) and whether it was properties."""

    doc: dict[str, Any]
    properties: bool


def load_config(
    path: str | Path, sysprops: Mapping[str, str] | None = None, *, resolve: bool = True
) -> Loaded:
    """Load a file, log what Flume would read differently, resolve `${...}`.

    `sysprops` are the `-Dname=value` arguments (`${sys:name}`).

    Raises:
        ConfigError: the file cannot be read or parsed, or a variable cannot be
            resolved; the message names the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text: {e}") from None
    props = is_properties(p, text)
    if props:
        notes: list[str] = []
        doc = properties_to_document(text, notes)
        for n in notes:
            log.warning("%s: %s", p, n)
    else:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from None
        for k in doc:
            if k not in ("agents", "vars"):
                raise ConfigError(
                    f"{p}: unknown top-level key '{k}' (expected [agents.NAME...] or [vars])"
                )
    if resolve:
        doc = resolve_document(doc, str(p), sysprops)
    return Loaded(doc, props)


def load_document(path: str | Path, sysprops: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Load a file into the document shape `{"agents": {...}}`, `${...}` resolved.

    Raises:
        ConfigError: as `load_config`.
    """
    return load_config(path, sysprops).doc
