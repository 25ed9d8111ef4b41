"""Every example in conf/ passes `flumed validate` (a type whose module is missing or
mistyped in the registry fails here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flumed.config.properties import properties_to_document, to_toml

CONF = Path(__file__).resolve().parents[2] / "conf"
EXAMPLES = sorted(p for p in CONF.iterdir() if p.suffix in (".toml", ".properties"))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumed", "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_there_is_an_example_per_data_flow_shape():
    names = {p.name for p in EXAMPLES}
    assert {
        "single-agent.toml",
        "multi-agent-tier.toml",
        "consolidation.toml",
        "multiplexing.toml",
        "fan-in-fan-out.toml",
        "flume-example.properties",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path: Path):
    r = validate(path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: OK")


def test_converted_properties_example_validates(tmp_path: Path):
    src = CONF / "flume-example.properties"
    out = tmp_path / "converted.toml"
    out.write_text(to_toml(properties_to_document(src.read_text())))
    r = validate(out)
    assert r.returncode == 0, r.stderr


def test_a_broken_example_fails_validation(tmp_path: Path):
    """The check above can fail: a wrong key in a copy of an example is reported."""
    bad = tmp_path / "bad.toml"
    bad.write_text((CONF / "single-agent.toml").read_text().replace("capacity = 10000", "cap = 1"))
    r = validate(bad)
    assert r.returncode == 1
    assert "channel c1: unknown key 'cap'" in r.stderr
