"""Loading, validation errors, Flume properties and `flumed convert`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flumed.config.graph import build_agent
from flumed.config.keys import flatten
from flumed.config.loader import load_document
from flumed.config.properties import parse_properties, properties_to_document, to_toml
from flumed.errors import ConfigError

GOOD = """
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = 44444
channels = ["c1"]

[agents.a1.channels.c1]
type = "memory"
capacity = 1000
transactionCapacity = 100
keep-alive = 1

[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
"""


def load(tmp_path: Path, text: str, name: str = "a.toml", agent: str | None = "a1"):
    p = tmp_path / name
    p.write_text(text)
    return build_agent(load_document(p), agent, str(p))


def errors(tmp_path: Path, text: str, name: str = "a.toml", agent: str | None = "a1") -> str:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, text, name, agent)
    return str(ei.value)


def test_good_config_builds(tmp_path):
    spec = load(tmp_path, GOOD)
    assert spec.channels["c1"].config.keep_alive == 1.0
    assert spec.sources["r1"].channels == ("c1",)
    assert spec.sinks["k1"].channel == "c1"


def test_agent_may_be_left_out_with_one_agent(tmp_path):
    assert load(tmp_path, GOOD, agent=None).name == "a1"


def test_unknown_key_names_file_agent_component_key(tmp_path):
    msg = errors(tmp_path, GOOD.replace("capacity = 1000", "capacity = 1000\ncapacityy = 3"))
    assert "a.toml: agent a1: channel c1: unknown key 'capacityy'" in msg


def test_wrong_type(tmp_path):
    msg = errors(tmp_path, GOOD.replace("port = 44444", 'port = "many"'))
    assert "source r1: key 'port': expected an integer, got 'many'" in msg


def test_out_of_range(tmp_path):
    msg = errors(tmp_path, GOOD.replace("port = 44444", "port = 70000"))
    assert "key 'port': must be <= 65535" in msg


def test_missing_required_key(tmp_path):
    msg = errors(tmp_path, GOOD.replace('bind = "127.0.0.1"\n', ""))
    assert "source r1: missing required key 'bind'" in msg


def test_dangling_channel_and_sink_without_channel(tmp_path):
    text = GOOD.replace('channels = ["c1"]', 'channels = ["c9"]').replace('channel = "c1"', "")
    msg = errors(tmp_path, text)
    assert "source r1: key 'channels': no channel named 'c9'" in msg
    assert "sink k1: missing required key 'channel'" in msg


def test_source_without_channel(tmp_path):
    msg = errors(tmp_path, GOOD.replace('channels = ["c1"]\n', ""))
    assert "source r1: missing required key 'channels'" in msg


def test_unknown_type(tmp_path):
    msg = errors(tmp_path, GOOD.replace('type = "logger"', 'type = "loggr"'))
    assert "sink k1: key 'type': unknown sink type 'loggr'" in msg


def test_every_error_reported_at_once(tmp_path):
    text = GOOD.replace("capacity = 1000", "capacity = -1").replace('type = "logger"', "x = 1")
    msg = errors(tmp_path, text)
    assert "channel c1: key 'capacity'" in msg
    assert "sink k1: missing required key 'type'" in msg


def test_two_sources_on_one_port(tmp_path):
    text = (
        GOOD
        + """
[agents.a1.sources.r2]
type = "netcat"
bind = "127.0.0.1"
port = 44444
channels = ["c1"]
"""
    )
    assert "tcp port 44444 is already used by source r1" in errors(tmp_path, text)


def test_sinkgroup_checks(tmp_path):
    text = (
        GOOD
        + """
[agents.a1.sinkgroups.g1]
sinks = ["k1", "k9"]
processor.type = "failover"
processor.priority.k1 = 5
processor.maxpenalty = "soon"
"""
    )
    msg = errors(tmp_path, text)
    assert "sinkgroup g1: key 'sinks': no sink named 'k9'" in msg
    assert "sinkgroup g1: processor: key 'maxpenalty'" in msg


def test_several_agents_need_a_name(tmp_path):
    text = GOOD + GOOD.replace("agents.a1", "agents.a2").replace("44444", "44445")
    assert "holds 2 agents" in errors(tmp_path, text, agent=None)
    assert load(tmp_path, text, agent="a2").name == "a2"
    assert "no agent named 'a3'" in errors(tmp_path, text, agent="a3")


def test_invalid_toml_names_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[agents.a1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        load_document(p)


PROPS = r"""
# A Flume agent, as Flume's user guide writes them
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sinkgroups = g1

a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = 44444
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = state
a1.sources.r1.selector.mapping.CZ = c1
a1.sources.r1.selector.mapping.US = c1 c2
a1.sources.r1.selector.default = c2
a1.sources.r1.interceptors = i2 i1
a1.sources.r1.interceptors.i1.type = org.apache.flume.interceptor.TimestampInterceptor$Builder
a1.sources.r1.interceptors.i2.type = static
a1.sources.r1.interceptors.i2.key = dc
a1.sources.r1.interceptors.i2.value = \
    eu-1

a1.channels.c1.type = memory
a1.channels.c1.capacity = 1000
a1.channels.c1.keep-alive = 2
a1.channels.c2.type = memory

a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = c2

a1.sinkgroups.g1.sinks = k1 k2
a1.sinkgroups.g1.processor.type = load_balance
a1.sinkgroups.g1.processor.selector = random
a1.sinkgroups.g1.processor.selector.maxTimeOut = 10000
a1.sinkgroups.g1.processor.backoff = true
"""


def test_parse_properties_continuation_and_comments():
    flat = parse_properties(PROPS)
    assert flat["a1.sources.r1.interceptors.i2.value"] == "eu-1"
    assert flat["a1.sources.r1.interceptors.i1.type"].endswith("$Builder")
    assert not any(k.startswith("#") for k in flat)


def test_properties_nest_lists_into_ordered_tables():
    doc = properties_to_document(PROPS)
    a1 = doc["agents"]["a1"]
    assert list(a1["sources"]) == ["r1"]
    assert list(a1["sources"]["r1"]["interceptors"]) == ["i2", "i1"]
    assert a1["sinkgroups"]["g1"]["processor"]["selector"] == "random"
    assert a1["sinkgroups"]["g1"]["processor"]["selector.maxTimeOut"] == "10000"


def test_properties_file_loads_as_agent(tmp_path):
    spec = load(tmp_path, PROPS, name="flume.properties")
    assert [i.name for i in spec.sources["r1"].interceptors] == ["i2", "i1"]
    assert spec.sources["r1"].selector.mapping == {"CZ": "c1", "US": "c1 c2"}
    assert spec.channels["c1"].config.keep_alive == 2.0
    g = spec.sinkgroups["g1"]
    assert g.config.selector == "random" and g.config.maxTimeOut == 10000 and g.config.backoff


def test_convert_round_trip_gives_same_components():
    doc = properties_to_document(PROPS)
    toml_text = to_toml(doc)
    back = tomllib.loads(toml_text)
    for kind in ("sources", "channels", "sinks", "sinkgroups"):
        for name, comp in doc["agents"]["a1"][kind].items():
            want = {k: str(v) for k, v in flatten(comp).items()}
            got_flat = flatten(back["agents"]["a1"][kind][name])
            got = {
                k: " ".join(v)
                if isinstance(v, list)
                else str(v).lower()
                if isinstance(v, bool)
                else str(v)
                for k, v in got_flat.items()
            }
            assert got == want, (kind, name)
    assert back["agents"]["a1"]["sources"]["r1"]["channels"] == ["c1", "c2"]
    assert back["agents"]["a1"]["channels"]["c1"]["capacity"] == 1000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumed", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_validate_ok_and_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = run_cli("validate", "-f", str(good))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        GOOD.replace("capacity = 1000", "capacity = 1000\nfoo = 1").replace('"c1"]', '"c7"]')
    )
    r = run_cli("validate", "-f", str(bad), "-n", "a1")
    assert r.returncode == 1
    assert f"{bad}: agent a1: channel c1: unknown key 'foo'" in r.stderr
    assert f"{bad}: agent a1: source r1: key 'channels': no channel named 'c7'" in r.stderr


def test_cli_convert(tmp_path):
    p = tmp_path / "flume.properties"
    p.write_text(PROPS)
    r = run_cli("convert", str(p))
    assert r.returncode == 0, r.stderr
    doc = tomllib.loads(r.stdout)
    assert doc["agents"]["a1"]["sources"]["r1"]["selector"]["mapping"]["US"] == "c1 c2"


def test_cli_agent_refuses_bad_config_without_starting(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("capacity = 1000", "capacity = 0"))
    r = run_cli("agent", "-f", str(bad), "-n", "a1")
    assert r.returncode == 2
    assert "channel c1: key 'capacity': must be >= 1" in r.stderr


def test_two_components_on_one_directory_or_file(tmp_path):
    text = (
        GOOD
        + f"""
[agents.a1.sources.s1]
type = "spooldir"
spoolDir = "{tmp_path}/spool"
channels = ["c1"]
[agents.a1.sources.s2]
type = "spooldir"
spoolDir = "{tmp_path}/spool/"
channels = ["c1"]
[agents.a1.sources.t1]
type = "taildir"
positionFile = "{tmp_path}/pos.json"
filegroups.f1 = "{tmp_path}/logs/.*"
channels = ["c1"]
[agents.a1.sources.t2]
type = "taildir"
positionFile = "{tmp_path}/pos.json"
filegroups.f1 = "{tmp_path}/other/.*"
channels = ["c1"]
[agents.a1.channels.f1]
type = "file"
dataDirs = "{tmp_path}/data"
[agents.a1.channels.f2]
type = "file"
dataDirs = "{tmp_path}/data"
"""
    )
    msg = errors(tmp_path, text)
    assert (
        f"source s2: key 'spoolDir': spool directory {tmp_path}/spool is already used by source s1"
        in msg
    )
    assert (
        f"source t2: key 'positionFile': position file {tmp_path}/pos.json is already used" in msg
    )
    assert (
        f"channel f2: key 'dataDirs': data directory {tmp_path}/data is already used by channel f1"
        in msg
    )
