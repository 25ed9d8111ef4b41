from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
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


@pytest.fixture
def make_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`make_tmpfs("16m")` mounts a small tmpfs (a disk that really fills up) and returns
    its path; skips when this process may not mount one (root in a permissive container).
    Everything mounted is unmounted at the end."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
            capture_output=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
