"""Fixtures for every test; the helpers behind them live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.pki import Pki, make_pki
from tests.support.tmpfs import MakeTmpfs, mounted_tmpfs
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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a certificate for 127.0.0.1/localhost as PEM files (tests/support/pki.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def make_tmpfs(tmp_path: Path) -> Iterator[MakeTmpfs]:
    """`make_tmpfs("16m")`: a tmpfs of that size, unmounted after the test; the test is
    skipped where this process may not mount one."""
    with ExitStack() as stack:
        n = 0

        def make(size: str) -> Path:
            nonlocal n
            n += 1
            return stack.enter_context(mounted_tmpfs(tmp_path / f"tmpfs{n}", size))

        yield make
