"""Reading a configuration file: TOML, or an Apache Flume `.properties` file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from flumed.config.properties import properties_to_document
from flumed.errors import ConfigError


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


def load_document(path: str | Path) -> dict[str, Any]:
    """Load a file into the document shape `{"agents": {...}}`.

    Raises:
        ConfigError: the file cannot be read or parsed; the message names the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text: {e}") from None
    if is_properties(p, text):
        return properties_to_document(text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    for k in doc:
        if k != "agents":
            raise ConfigError(f"{p}: unknown top-level key '{k}' (expected [agents.NAME...])")
    return doc
