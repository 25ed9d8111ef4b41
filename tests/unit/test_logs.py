"""Logging: one line an entry, and rate-limited warnings."""

from __future__ import annotations

import logging
import subprocess
import sys

from flumed.logs import OneLineFormatter, RateLimitedLog


def test_traceback_stays_on_one_line():
    fmt = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "flumed.x", logging.ERROR, __file__, 1, "Failed:\n%s", ("two",), sys.exc_info()
        )
    line = fmt.format(record)
    assert "\n" not in line
    assert line.startswith("ERROR flumed.x: Failed: | two | Traceback")
    assert "ValueError: bad | thing" in line


def test_rate_limited_log_holds_back_and_counts(caplog):
    log = logging.getLogger("flumed.test")
    rl = RateLimitedLog(log, interval=3600)
    with caplog.at_level(logging.WARNING, logger="flumed.test"):
        for i in range(5):
            rl.warn("bad input %d", i)
        rl.interval = 0
        rl.log(logging.ERROR, "lost %d", 9)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["bad input 0", "lost 9 (4 similar warnings held back)"]
    assert caplog.records[1].levelno == logging.ERROR


def test_agent_log_lines_are_single_entries(tmp_path):
    # A config error makes the agent log several problems, each its own line.
    bad = tmp_path / "bad.toml"
    bad.write_text('[agents.a1.sources.r1]\ntype = "netcat"\n')
    r = subprocess.run(
        [sys.executable, "-m", "flumed", "agent", "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) >= 3
    assert all(" ERROR flumed: " in ln for ln in lines), lines


def test_rate_limited_log_burst_lets_distinct_problems_through(caplog):
    log = logging.getLogger("flumed.test.burst")
    rl = RateLimitedLog(log, interval=3600, burst=3)
    with caplog.at_level(logging.WARNING, logger="flumed.test.burst"):
        for i in range(10):
            rl.warn("bad input %d", i)
    assert [r.getMessage() for r in caplog.records] == [
        "bad input 0",
        "bad input 1",
        "bad input 2",
    ]
