"""`flumed top`: a live table of one or more agents' components, from their `/metrics`.

Per component: events/s in and out, channel fill, errors (the sum of its failure counters),
and the problems `/health` reports (a sink backing off, a full channel). Refreshes in place
with plain ANSI escapes (fine over SSH); `q` or Ctrl-C quits. `--once` prints one table
for scripts (rates over one `--interval`) and exits, 1 when an agent did not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import termios
import time
import tty
from dataclasses import dataclass, field
from typing import Any

import aiohttp

#: (in, out) counters per kind: what "events/s in" and "out" mean for it.
FLOW = {
    "SOURCE": ("EventReceivedCount", "EventAcceptedCount"),
    "CHANNEL": ("EventPutSuccessCount", "EventTakeSuccessCount"),
    "SINK": ("EventDrainAttemptCount", "EventDrainSuccessCount"),
}


@dataclass
class Sample:
    at: float
    metrics: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    error: str = ""


async def fetch(session: aiohttp.ClientSession, url: str) -> Sample:
    """One sample of an agent: /metrics, and /health's problems when it answers."""
    now = time.monotonic()
    try:
        async with session.get(f"{url}/metrics") as r:
            metrics = json.loads(await r.text())
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as e:
        return Sample(now, error=str(e) or type(e).__name__)
    problems: dict[str, str] = {}
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, OSError):
        async with session.get(f"{url}/health") as r:
            for p in json.loads(await r.text()).get("problems", []):
                problems.setdefault(p["component"], p["what"])
    return Sample(now, metrics, problems)


def _num(d: dict[str, str], k: str) -> float:
    try:
        return float(d.get(k, 0))
    except ValueError:
        return 0.0


def rows(url: str, prev: Sample | None, cur: Sample) -> list[list[str]]:
    """Table rows for one agent: component, kind, in/s, out/s, fill, errors, problem."""
    if cur.error:
        return [[url, "-", "-", "-", "-", "-", "-", f"unreachable: {cur.error}"]]
    out = []
    dt = (cur.at - prev.at) if prev and not prev.error else 0.0
    for comp, vals in sorted(cur.metrics.items(), key=lambda kv: _order(kv[0])):
        kind = vals.get("Type", comp.split(".")[0])
        name = comp.split(".", 1)[-1]
        rates = ["-", "-"]
        if kind in FLOW and dt > 0 and prev is not None:
            before = prev.metrics.get(comp, {})
            rates = [f"{(_num(vals, k) - _num(before, k)) / dt:,.0f}" for k in FLOW[kind]]
        fill = f"{_num(vals, 'ChannelFillPercentage'):.1f}%" if kind == "CHANNEL" else ""
        errors = sum(_num(vals, k) for k in vals if "Fail" in k or "ErrorCount" in k)
        problem = cur.problems.get(comp, "")
        if not problem and kind == "SINK":
            problem = cur.problems.get(f"SINKGROUP.{name}", "")
        out.append([url, name, kind.lower(), *rates, fill, f"{errors:,.0f}", problem])
    return out


def _order(comp: str) -> tuple[int, str]:
    kind = comp.split(".")[0]
    return ({"SOURCE": 0, "CHANNEL": 1, "SINK": 2}.get(kind, 3), comp)


HEAD = ["AGENT", "COMPONENT", "KIND", "IN/s", "OUT/s", "FILL", "ERRORS", "PROBLEM"]


def render(table: list[list[str]], width: int = 200) -> str:
    cols = list(zip(*([HEAD, *table]), strict=True))
    widths = [max(len(c) for c in col) for col in cols[:-1]]
    lines = []
    for r in [HEAD, *table]:
        cells = [
            c.rjust(w) if i in (3, 4, 5, 6) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r[:-1], widths, strict=True))
        ]
        lines.append(("  ".join(cells) + "  " + r[-1])[:width].rstrip())
    return "\n".join(lines)


async def _sample_all(session: aiohttp.ClientSession, urls: list[str]) -> list[Sample]:
    return list(await asyncio.gather(*(fetch(session, u) for u in urls)))


async def run(urls: list[str], interval: float, once: bool) -> int:
    timeout = aiohttp.ClientTimeout(total=max(2.0, interval))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        prev = await _sample_all(session, urls)
        if once:
            await asyncio.sleep(interval)
            cur = await _sample_all(session, urls)
            table = [r for u, p, c in zip(urls, prev, cur, strict=True) for r in rows(u, p, c)]
            print(render(table, width=10_000))
            return 1 if any(c.error for c in cur) else 0
        return await _live(session, urls, interval, prev)


async def _live(
    session: aiohttp.ClientSession, urls: list[str], interval: float, prev: list[Sample]
) -> int:
    quit_ = asyncio.Event()
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    saved = None
    if fd is not None:
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

        def on_key() -> None:
            if os.read(fd, 64).lower().startswith(b"q"):
                quit_.set()

        loop.add_reader(fd, on_key)
    out = sys.stdout
    out.write("\x1b[?25l")  # hide the cursor while the table refreshes
    try:
        while not quit_.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(quit_.wait(), interval)
            if quit_.is_set():
                break
            cur = await _sample_all(session, urls)
            table = [r for u, p, c in zip(urls, prev, cur, strict=True) for r in rows(u, p, c)]
            prev = cur
            width = os.get_terminal_size(out.fileno()).columns if out.isatty() else 0
            width = width or 200  # a terminal that reports no size (a bare pty)
            stamp = time.strftime("%H:%M:%S")
            out.write(f"\x1b[H\x1b[2Jflumed top  {stamp}  (q quits)\n\n{render(table, width)}\n")
            out.flush()
    finally:
        out.write("\x1b[?25h\n")
        out.flush()
        if fd is not None and saved is not None:
            loop.remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return 0


def add_parser(sub: Any) -> None:
    """Add the `top` command to the `flumed` command's subparsers."""
    p = sub.add_parser(
        "top",
        help="live view of agents' components (events/s, fill, errors, problems)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "urls",
        nargs="*",
        default=["http://127.0.0.1:41414"],
        help="agents' metrics endpoints (default http://127.0.0.1:41414)",
    )
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.set_defaults(func=cmd_top)


def cmd_top(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        print("flumed top: --interval must be > 0", file=sys.stderr)
        return 2
    urls = [u if "://" in u else f"http://{u}" for u in args.urls]
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run([u.rstrip("/") for u in urls], args.interval, args.once))
    return 0
