"""flumed/escapes.py: Flume's BucketPath escapes, rounding, time zones, safe header values."""

from __future__ import annotations

import pytest

from flumed import escapes
from flumed.escapes import MissingTimestamp, Template

# 2006-01-02 15:04:05.678 UTC, a Monday.
TS = 1136214245678
H = {"timestamp": str(TS), "host": "web1", "dc": "eu"}


def render(text: str, headers: dict[str, str] | None = None, **kw) -> str:
    return Template(text, time_zone=kw.pop("time_zone", "UTC"), **kw).render(
        H if headers is None else headers, 0
    )


@pytest.mark.parametrize(
    ("esc", "want"),
    [
        ("%a", "Mon"),
        ("%A", "Monday"),
        ("%b", "Jan"),
        ("%B", "January"),
        ("%c", "Mon Jan 2 15:04:05 2006"),
        ("%d", "02"),
        ("%e", "2"),
        ("%D", "01/02/06"),
        ("%H", "15"),
        ("%I", "03"),
        ("%j", "002"),
        ("%k", "15"),
        ("%l", "3"),
        ("%m", "01"),
        ("%n", "1"),
        ("%M", "04"),
        ("%p", "PM"),
        ("%s", "1136214245"),
        ("%S", "05"),
        ("%t", str(TS)),
        ("%y", "06"),
        ("%Y", "2006"),
        ("%z", "+0000"),
        ("%%", "%"),
        ("%{host}", "web1"),
        ("%{missing}", ""),
        ("%x", ""),
    ],
)
def test_every_escape(esc, want):
    assert render(f"/logs/{esc}/x") == f"/logs/{want}/x"


def test_static_escapes_are_this_host():
    name, ip, fqdn = escapes.host_values()
    assert render("%[localhost]-%[IP]-%[FQDN]") == f"{name}-{ip}-{fqdn}"
    with pytest.raises(ValueError, match=r"unknown escape %\[nope\]"):
        Template("/x/%[nope]")


def test_time_zone_and_its_offset():
    assert render("%Y-%m-%d %H:%M %z", time_zone="America/Los_Angeles") == "2006-01-02 07:04 -0800"
    assert render("%H%M %z", time_zone="GMT+05:30") == "2034 +0530"
    with pytest.raises(ValueError, match="unknown time zone"):
        Template("/x/%H", time_zone="Mars/Olympus")


@pytest.mark.parametrize(
    ("unit", "value", "want"),
    [
        ("second", 10, "15:04:00"),
        ("minute", 10, "15:00:00"),
        ("minute", 5, "15:00:00"),
        ("hour", 6, "12:00:00"),
        ("hour", 1, "15:00:00"),
    ],
)
def test_round_down(unit, value, want):
    got = render("%H:%M:%S", round=True, round_value=value, round_unit=unit)
    assert got == want


def test_round_leaves_t_raw_and_rounds_s():
    t = "%t %s"
    got = render(t, round=True, round_value=1, round_unit="hour")
    assert got == f"{TS} {1136214000}"


def test_round_value_limits():
    with pytest.raises(ValueError, match=r"roundValue must be 1\.\.24"):
        Template("%H", round=True, round_value=25, round_unit="hour")


def test_missing_or_bad_timestamp_names_the_fix():
    t = Template("/logs/%Y/%{host}", time_zone="UTC")
    with pytest.raises(MissingTimestamp, match=r"hdfs\.useLocalTimeStamp") as e:
        t.render({"host": "a"}, 0)
    assert "timestamp interceptor" in str(e.value)
    with pytest.raises(MissingTimestamp, match="'yesterday'"):
        t.render({"timestamp": "yesterday"}, 0)
    # No time escape: no timestamp needed.
    assert Template("/logs/%{host}").render({"host": "a"}, 0) == "/logs/a"


def test_use_local_timestamp_ignores_the_header():
    t = Template("%Y-%m-%d %t", time_zone="UTC", use_local_timestamp=True)
    assert t.render({"timestamp": "0"}, TS) == f"2006-01-02 {TS}"


def test_render_many_caches_but_keeps_each_value():
    t = Template("/%{h}/%H%M%S", time_zone="UTC")
    hs = [{"h": str(i % 3), "timestamp": str(TS + i * 1000)} for i in range(120)]
    got = t.render_many(hs, 0)
    want = [Template("/%{h}/%H%M%S", time_zone="UTC").render(h, 0) for h in hs]
    assert got == want and len(set(got)) == 120


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("../../etc", "/base/_/_/etc/f"),
        ("..", "/base/_/f"),
        ("a/../../b", "/base/a/_/_/b/f"),
        ("/etc/passwd", "/base//etc/passwd/f"),
        ("a\0b", "/base/a_b/f"),
        ("v1.2", "/base/v1.2/f"),
    ],
)
def test_safe_header_values_stay_inside(value, want):
    t = Template("/base/%{h}/f", safe=True)
    assert t.render({"h": value}, 0) == want


def test_escape_headers_for_topics():
    assert escapes.escape_headers("logs-%{dc}-%Y", H) == "logs-eu-%Y"
    assert escapes.escape_headers("plain", H) == "plain"
