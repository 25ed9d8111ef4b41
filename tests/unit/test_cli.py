"""The CLI: a version, choices in the help, and a clear message instead of a traceback
for every user mistake; JSON logs for log shippers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flumed

CONF = Path(__file__).resolve().parents[2] / "conf"


def flumed_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumed", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version():
    r = flumed_cmd("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"flumed {flumed.__version__}"


def test_help_names_choices_defaults_and_environment():
    r = flumed_cmd("agent", "--help")
    text = " ".join(r.stdout.split())
    assert "DEBUG, INFO, WARNING, ERROR or CRITICAL" in text
    assert "FLUMED_LOG_LEVEL" in text and "FLUMED_LOG_FORMAT" in text
    assert "{plain,json}" in text
    assert "FLUMED_LOG_LEVEL" in flumed_cmd("--help").stdout


def test_bad_log_level_is_a_usage_error_not_a_traceback():
    r = flumed_cmd("agent", "--log-level", "bogus")
    assert r.returncode == 2 and "invalid choice: 'BOGUS'" in r.stderr
    assert "Traceback" not in r.stderr
    r = flumed_cmd("agent", env={"FLUMED_LOG_LEVEL": "bogus"})
    assert r.returncode == 2 and "unknown log level 'BOGUS'" in r.stderr
    assert "Traceback" not in r.stderr


def test_convert_of_a_toml_file_says_so():
    r = flumed_cmd("convert", str(CONF / "single-agent.toml"))
    assert r.returncode == 1 and "looks like TOML already" in r.stderr
    assert "Traceback" not in r.stderr
    r = flumed_cmd("convert", "/nonexistent/flume.properties")
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_json_log_format_is_one_object_a_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[agents.a1.sources.r1]\ntype = "netcat"\n')
    r = flumed_cmd("agent", "-f", str(bad), "--log-format", "json")
    assert r.returncode == 2
    records = [json.loads(ln) for ln in r.stderr.splitlines()]
    assert len(records) >= 2
    assert {rec["level"] for rec in records} == {"ERROR"}
    assert all(rec["logger"] == "flumed" and rec["time"].endswith("Z") for rec in records)
    assert any("missing required key 'bind'" in rec["message"] for rec in records)
