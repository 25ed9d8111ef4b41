"""Flume's `ipFilterRules` for RPC sources: `allow|deny : ip|name : glob`, comma-separated.

The first rule that matches the peer decides; a peer that matches no rule is allowed
(Netty's RuleBasedIpFilter). Globs: `*` any run of characters, `?` one character,
everything else literal. `ip` rules match the peer's address as text; `name` rules its
reverse-resolved host name (case-insensitive); `name:localhost` matches any local
address (loopback, or the address the connection came in on).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass

#: Longest wait for a reverse lookup; a peer whose name does not resolve in time
#: matches no `name` rule.
LOOKUP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Rule:
    allow: bool
    kind: str  # "ip" | "name"
    pattern: str
    regex: re.Pattern[str]

    @property
    def localhost(self) -> bool:
        return self.kind == "name" and self.pattern.lower() == "localhost"


def _glob(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE)


def parse_rules(text: str) -> list[Rule]:
    """Parse `ipFilterRules`. Raises ValueError naming the malformed rule."""
    rules = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = item.split(":", 2)
        if len(parts) != 3 or parts[0] not in ("allow", "deny") or parts[1] not in ("ip", "name"):
            raise ValueError(
                f"rule {item!r} is not <allow|deny>:<ip|name>:<pattern> "
                "(e.g. allow:ip:127.*,deny:name:*)"
            )
        if not parts[2]:
            raise ValueError(f"rule {item!r} has an empty pattern")
        rules.append(Rule(parts[0] == "allow", parts[1], parts[2], _glob(parts[2])))
    if not rules:
        raise ValueError("no rules given")
    return rules


def _is_local(ip: str, local_ip: str | None) -> bool:
    try:
        if ipaddress.ip_address(ip).is_loopback:
            return True
    except ValueError:
        return False
    return ip == local_ip


class IpFilter:
    """Decides whether a peer may connect. Shared by a source's connections."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    def decide_now(self, ip: str, local_ip: str | None) -> bool | None:
        """The decision if it needs no name lookup; None when it does."""
        for rule in self.rules:
            if rule.kind == "ip":
                if rule.regex.fullmatch(ip):
                    return rule.allow
            elif rule.localhost:
                if _is_local(ip, local_ip):
                    return rule.allow
            else:
                return None
        return True

    async def decide(self, ip: str, local_ip: str | None) -> bool:
        """The decision, resolving the peer's name once if a `name` rule needs it."""
        name: str | None = None
        looked_up = False
        for rule in self.rules:
            if rule.kind == "ip":
                if rule.regex.fullmatch(ip):
                    return rule.allow
            elif rule.localhost:
                if _is_local(ip, local_ip):
                    return rule.allow
            else:
                if not looked_up:
                    name = await _reverse(ip)
                    looked_up = True
                if name is not None and rule.regex.fullmatch(name):
                    return rule.allow
        return True


async def _reverse(ip: str) -> str | None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT):
            host, _ = await loop.getnameinfo((ip, 0), socket.NI_NAMEREQD)
    except (OSError, TimeoutError):
        return None
    return host
