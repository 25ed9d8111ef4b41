"""The component contract (config.keys.ComponentConfig): explicit claims, checked for
every kind, TCP and UDP ports told apart by the component, not by its type name."""

from __future__ import annotations

from typing import Any

import pytest

from flumed.config.graph import build_agent
from flumed.errors import ConfigError


def agent(sources: dict[str, Any], sinks: dict[str, Any]) -> dict[str, Any]:
    for s in sources.values():
        s.setdefault("channels", ["c"])
    for k in sinks.values():
        k.setdefault("channel", "c")
    return {
        "agents": {
            "a": {
                "sources": sources,
                "channels": {"c": {"type": "memory"}},
                "sinks": sinks,
            }
        }
    }


def problems(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        build_agent(doc, "a", "t.toml")
    return str(e.value)


def test_one_directory_claimed_by_two_file_roll_sinks_is_refused(tmp_path):
    out = str(tmp_path / "out")
    doc = agent(
        {"r": {"type": "seq"}},
        {
            "k1": {"type": "file_roll", "sink.directory": out},
            "k2": {"type": "file_roll", "sink.directory": out + "/."},
        },
    )
    assert f"sink k2: key 'sink.directory': directory {out} is already used by sink k1" in (
        problems(doc)
    )


def test_tcp_and_udp_on_one_port_number_are_different_resources():
    doc = agent(
        {
            "t": {"type": "syslogtcp", "host": "127.0.0.1", "port": 5140},
            "u": {"type": "syslogudp", "host": "127.0.0.1", "port": 5140},
        },
        {"k": {"type": "null"}},
    )
    spec = build_agent(doc, "a", "t.toml")
    assert set(spec.sources) == {"t", "u"}


def test_udp_sources_on_one_port_are_refused_whatever_their_type_name():
    doc = agent(
        {
            "u1": {"type": "netcatudp", "bind": "127.0.0.1", "port": 5141},
            "u2": {
                "type": "org.apache.flume.source.SyslogUDPSource",
                "host": "0.0.0.0",
                "port": 5141,
            },
        },
        {"k": {"type": "null"}},
    )
    assert "udp port 5141 is already used by source u1" in problems(doc)


def test_a_port_to_connect_to_is_not_a_claim():
    doc = agent(
        {"r": {"type": "seq"}},
        {
            "k1": {"type": "avro", "hostname": "127.0.0.1", "port": 4545},
            "k2": {"type": "thrift", "hostname": "127.0.0.1", "port": 4545},
        },
    )
    assert set(build_agent(doc, "a", "t.toml").sinks) == {"k1", "k2"}


def test_each_port_of_multiport_syslogtcp_is_claimed():
    doc = agent(
        {
            "m": {"type": "multiport_syslogtcp", "host": "127.0.0.1", "ports": "6001 6002"},
            "n": {"type": "netcat", "bind": "127.0.0.1", "port": 6002},
        },
        {"k": {"type": "null"}},
    )
    assert "tcp port 6002 is already used by source m" in problems(doc)
