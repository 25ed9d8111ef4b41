"""Fixtures of the fleet tests: a whole fleet per test, torn down even when it fails.

The summary at the end of the run lists, per test, how long the fleet took to deliver
its backlog after the fault ended, and the duplicates per edge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fleet import netns
from tests.fleet.fleet import Fleet, have_tools

#: Lines for the terminal summary, added by the tests through `report`.
REPORT: list[str] = []


@pytest.fixture(scope="session")
def namespaces() -> Iterator[None]:
    """Skips (saying why) where namespaces cannot be made; sweeps stale ones first."""
    reason = have_tools("ip", "logger") or netns.why_not()
    if reason:
        pytest.skip(reason)
    netns.sweep()
    yield
    netns.sweep()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keeps each phase's report on the item, so that a fixture can tell a failure."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def fleet_factory(
    namespaces: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(**kw: object) -> Fleet:
        f = Fleet(tmp_path, **kw)  # type: ignore[arg-type]
        made.append(f)
        return f.start()

    try:
        yield make
    finally:
        rep = getattr(request.node, "rep_call", None)
        for f in made:
            if rep is not None and rep.failed:
                print(f.diagnose())
            f.close()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    def add(line: str) -> None:
        REPORT.append(f"{request.node.name}: {line}")
        print(line)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("fleet: delivery after each fault")
        for line in REPORT:
            terminalreporter.write_line(line)
