"""`make install` into a staging root: a venv under opt/flumed with flumed in it, the
units naming /opt/flumed/bin/flumed, /etc/flumed and /etc/default/flumed; the units pass
`systemd-analyze verify` with the staged /opt/flumed mounted where the units look for it
(a private mount namespace, so the machine's /opt is untouched); a FLUMED_BIN that is not
executable is refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stage = tmp_path_factory.mktemp("stage")
    r = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={stage}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return stage


@pytest.mark.slow
def test_make_install_lays_out_venv_units_and_config(staged: Path):
    flumed = staged / "opt/flumed/bin/flumed"
    assert flumed.is_file()
    r = subprocess.run([str(flumed), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("flumed ")
    r = subprocess.run(
        [str(flumed), "validate", "-f", str(staged / "etc/flumed/flumed.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (staged / "etc/default/flumed").is_file()
    for unit in ("flumed.service", "flumed@.service"):
        text = (staged / "etc/systemd/system" / unit).read_text()
        assert "ExecStart=/opt/flumed/bin/flumed agent" in text
        assert "/usr/local/bin/flumed" not in text


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_installed_units_pass_systemd_analyze_verify(staged: Path):
    units = staged / "etc/systemd/system"
    shutil.copy(units / "flumed@.service", units / "flumed@web.service")
    script = (
        "set -e; mount -t tmpfs none /opt; mkdir /opt/flumed; "
        f"mount --bind {staged / 'opt/flumed'} /opt/flumed; "
        f"cd {units}; systemd-analyze verify ./flumed.service ./flumed@web.service"
    )
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    if "unshare failed" in r.stderr or "Operation not permitted" in r.stderr:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    problems = [ln for ln in r.stderr.splitlines() if "flumed" in ln and ".service" in ln]
    assert not problems, r.stderr


def test_install_systemd_refuses_a_flumed_bin_that_is_not_executable(tmp_path: Path):
    r = subprocess.run(
        ["make", "-s", "install-systemd", f"DESTDIR={tmp_path}", "FLUMED_BIN=/nonexistent/flumed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "FLUMED_BIN=/nonexistent/flumed is not an executable flumed" in r.stderr
    assert not (tmp_path / "etc/systemd/system/flumed.service").exists()
