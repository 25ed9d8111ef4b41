from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.util import AgentProcess


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator:
    """Start real agent processes from config text; all are killed at the end."""
    procs: list[AgentProcess] = []

    def make(conf_text: str, name: str | None = "a1", start: bool = True, **kw) -> AgentProcess:
        conf = tmp_path / f"agent{len(procs)}.toml"
        if kw.pop("properties", False):
            conf = conf.with_suffix(".properties")
        conf.write_text(conf_text)
        p = AgentProcess(conf, name=name, **kw)
        procs.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in procs:
        p.close()
