"""`flumed tap`: a sample of the events passing a channel or a sink of a running agent.

Off unless the agent runs with `--tap`. Then the metrics endpoint serves
`GET /tap?component=NAME&limit=N&header=K=V`: one JSON object a line
(`{"component", "headers", "body"}`, the body as text with undecodable bytes escaped),
until `limit` events were sent or the client goes away.

A tap never blocks or slows the data path: the hooks (after a channel put commits, after
a sink's take commits) hand events to each subscriber's bounded queue with `put_nowait`
and drop what does not fit; with no subscriber a hook costs one dict lookup per batch.
Only loopback clients are answered unless the agent runs with `--tap-remote`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from flumed.event import Event

#: The most events one subscriber may ask for, and hold unsent.
MAX_LIMIT = 10_000


class TapSubscriber:
    """One `/tap` request: a bounded queue of sampled events for one component."""

    def __init__(self, component: str, limit: int, match: dict[str, str]) -> None:
        self.component = component
        self.remaining = limit
        self.match = match
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=limit)
        self.dropped = 0

    def offer(self, events: Sequence[Event]) -> None:
        """Called by the hub from the data path: never waits, drops what does not fit."""
        for e in events:
            if self.remaining <= 0:
                return
            if self.match and any(e.headers.get(k) != v for k, v in self.match.items()):
                continue
            item = {
                "component": self.component,
                "headers": dict(e.headers),
                "body": e.body.decode("utf-8", "backslashreplace"),
            }
            try:
                self.queue.put_nowait(item)
            except asyncio.QueueFull:
                self.dropped += 1
                return
            self.remaining -= 1


class TapHub:
    """Subscribers by component name. `offer()` is called by the data path."""

    def __init__(self) -> None:
        self.subscribers: dict[str, list[TapSubscriber]] = {}

    def offer(self, component: str, events: Sequence[Event]) -> None:
        subs = self.subscribers.get(component)
        if subs:
            for s in subs:
                s.offer(events)

    def subscribe(self, sub: TapSubscriber) -> None:
        self.subscribers.setdefault(sub.component, []).append(sub)

    def unsubscribe(self, sub: TapSubscriber) -> None:
        subs = self.subscribers.get(sub.component, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self.subscribers.pop(sub.component, None)


#: The process's hub: the channel processor and BatchSink offer to it.
HUB = TapHub()


def parse_match(values: Sequence[str]) -> dict[str, str]:
    """`k=v` strings → a dict. Raises ValueError naming a malformed one."""
    out: dict[str, str] = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise ValueError(f"--header {v!r}: expected KEY=VALUE")
        out[k] = val
    return out


# -- the client: `flumed tap` -----------------------------------------------------------
def add_parser(sub: Any) -> None:
    """Add the `tap` command to the `flumed` command's subparsers."""
    p = sub.add_parser(
        "tap",
        help="print a sample of the events passing a channel or sink of a running agent",
        description="Print events passing COMPONENT (a channel or sink name) of an agent "
        "started with --tap and --metrics-port. Sampling never slows the agent: events that "
        "do not fit are skipped.",
    )
    p.add_argument("component", help="channel or sink name, e.g. c1 or k1")
    p.add_argument(
        "--url",
        default="http://127.0.0.1:41414",
        help="the agent's metrics endpoint (default %(default)s)",
    )
    p.add_argument(
        "--limit", type=int, default=10, help=f"events to print, 1..{MAX_LIMIT} (default 10)"
    )
    p.add_argument(
        "--header", action="append", default=[], metavar="K=V", help="only events with K=V"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="give up after SECONDS (default 60)")
    p.add_argument("--json", action="store_true", help="print the JSON lines as received")
    p.set_defaults(func=cmd_tap)


def cmd_tap(args: argparse.Namespace) -> int:
    try:
        parse_match(args.header)
    except ValueError as e:
        print(f"flumed tap: {e}", file=sys.stderr)
        return 2
    if not 1 <= args.limit <= MAX_LIMIT:
        print(f"flumed tap: --limit must be 1..{MAX_LIMIT}", file=sys.stderr)
        return 2
    query = urllib.parse.urlencode(
        [("component", args.component), ("limit", str(args.limit))]
        + [("header", h) for h in args.header]
    )
    url = f"{args.url.rstrip('/')}/tap?{query}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as r:
            for raw in r:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if not line:
                    continue
                if args.json:
                    print(line, flush=True)
                    continue
                item = json.loads(line)
                headers = " ".join(f"{k}={v}" for k, v in item["headers"].items())
                print(f"{item['component']} {{{headers}}} {item['body']}", flush=True)
    except urllib.error.HTTPError as e:
        print(f"flumed tap: {url}: {e.code} {e.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as e:
        print(f"flumed tap: {url}: {e}", file=sys.stderr)
        return 1
    return 0


async def serve_until_done(sub: TapSubscriber, write: Any, timeout: float) -> None:
    """Send a subscriber's events as JSON lines until its limit or `timeout` seconds.

    Called by the metrics endpoint's `/tap` handler; `write` is the response's write.
    """
    sent = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while sent < sub.queue.maxsize:
                item = await sub.queue.get()
                await write((json.dumps(item) + "\n").encode())
                sent += 1
