"""A properties file read as Flume reads it (issue 16, points 6, 7, 8): list lines decide
which components exist, commas in lists, unknown keys warned (strict on demand), every
error of every component in one pass, Jetty and file-channel warnings at validate,
`flumed convert` of list lines without keys."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flumed.config.graph import build_agent
from flumed.config.loader import load_config
from flumed.config.properties import properties_to_document, to_toml
from flumed.errors import ConfigError

BASE = """\
a1.sources = r1
a1.channels = c1
a1.sinks = k1 k2
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = c1
"""


def flumed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumed", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


def build(tmp_path: Path, text: str, name: str = "a.properties", strict: bool | None = None):
    p = tmp_path / name
    p.write_text(text)
    loaded = load_config(p)
    return build_agent(
        loaded.doc, "a1", str(p), strict=strict if strict is not None else not loaded.properties
    )


def test_a_section_without_list_line_is_not_used_as_flume_does(tmp_path, caplog):
    text = BASE + (
        "#a1.sinkgroups = g1\n"
        "a1.sinkgroups.g1.sinks = k1 k2\n"
        "a1.sinkgroups.g1.processor.type = failover\n"
    )
    with caplog.at_level(logging.WARNING):
        spec = build(tmp_path, text)
    assert spec.sinkgroups == {}
    assert "no line 'a1.sinkgroups = ...' names the sinkgroups, so Flume uses none" in caplog.text
    assert "sinkgroup g1 ignored" in caplog.text


def test_a_component_missing_from_its_list_line_is_not_used(tmp_path, caplog):
    text = BASE.replace("a1.sinks = k1 k2", "a1.sinks = k1")
    with caplog.at_level(logging.WARNING):
        spec = build(tmp_path, text)
    assert set(spec.sinks) == {"k1"}
    assert "sink k2 not named in 'a1.sinks'" in caplog.text


def test_commas_in_lists_are_separators_with_a_warning(tmp_path, caplog):
    text = BASE.replace("a1.sinks = k1 k2", "a1.sinks = k1, k2")
    text = text.replace("a1.channels = c1", "a1.channels = c1,c2")
    text += "a1.channels.c2.type = memory\n"
    text = text.replace("a1.sources.r1.channels = c1", "a1.sources.r1.channels = c1, c2")
    with caplog.at_level(logging.WARNING):
        spec = build(tmp_path, text)
    assert set(spec.sinks) == {"k1", "k2"}
    assert spec.sources["r1"].channels == ("c1", "c2")
    assert "Flume splits names on whitespace only, so it would look for a name 'k1,'" in (
        caplog.text
    )


def test_unknown_keys_warn_with_did_you_mean_in_properties(tmp_path, caplog):
    text = BASE + "a1.channels.c1.transactioncapacity = 10\na1.sources.r1.bind = 0.0.0.0\n"
    with caplog.at_level(logging.WARNING):
        build(tmp_path, text)
    assert (
        "agent a1: channel c1: unknown key 'transactioncapacity' (did you mean "
        "'transactionCapacity'?): ignored, as Flume ignores it" in caplog.text
    )
    assert "source r1: unknown key 'bind'" in caplog.text
    with pytest.raises(ConfigError, match="did you mean 'transactionCapacity'"):
        build(tmp_path, text, strict=True)


def test_unknown_keys_are_errors_in_toml(tmp_path):
    text = to_toml(properties_to_document(BASE + "a1.channels.c1.capacty = 10\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'capacty' \(did you mean 'capacity'\?\)"):
        build(tmp_path, text, "a.toml")


def test_validate_strict_flag(tmp_path):
    conf = tmp_path / "a.properties"
    conf.write_text(BASE + "a1.channels.c1.transactioncapacity = 10\n")
    r = flumed("validate", "-f", str(conf))
    assert r.returncode == 0, r.stderr
    assert "unknown key 'transactioncapacity'" in r.stderr
    r = flumed("validate", "--strict", "-f", str(conf))
    assert r.returncode == 1
    assert "channel c1: unknown key 'transactioncapacity'" in r.stderr


def test_every_error_of_every_component_in_one_pass(tmp_path):
    text = BASE + (
        "a1.channels.c1.capacity = 10\n"
        "a1.channels.c1.transactionCapacity = 100\n"  # check(): > capacity
        "a1.channels.c1.bogus = 1\n"
        "a1.sinks.k1.maxBytesToLog = many\n"
        "a1.sinks.k1.bogus2 = 1\n"
    )
    with pytest.raises(ConfigError) as ei:
        build(tmp_path, text, strict=True)
    msg = str(ei.value)
    assert "channel c1: unknown key 'bogus'" in msg
    assert "channel c1: transactionCapacity (100) must not exceed capacity (10)" in msg
    assert "sink k1: key 'maxBytesToLog': expected an integer" in msg
    assert "sink k1: unknown key 'bogus2'" in msg


def test_validate_warns_about_jetty_and_file_channel_keys_naming_everything(tmp_path):
    conf = tmp_path / "web.properties"
    conf.write_text(
        "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n"
        "a1.sources.r1.type = http\na1.sources.r1.port = 5140\na1.sources.r1.channels = c1\n"
        "a1.sources.r1.HttpConfiguration.sendServerVersion = false\n"
        "a1.sources.r1.ServerConnector.idleTimeout = 300\n"
        f"a1.channels.c1.type = file\na1.channels.c1.dataDirs = {tmp_path}/d1,{tmp_path}/d2\n"
        "a1.channels.c1.maxFileSize = 100\n"
        "a1.sinks.k1.type = logger\na1.sinks.k1.channel = c1\n"
    )
    r = flumed("validate", "-f", str(conf))
    assert r.returncode == 0, r.stderr
    where = f"{conf}: agent a1:"
    assert f"{where} source r1: key 'HttpConfiguration.sendServerVersion' is a Jetty" in r.stderr
    assert f"{where} source r1: key 'ServerConnector.idleTimeout' is a Jetty" in r.stderr
    assert f"{where} channel c1: key 'maxFileSize' has no meaning in flumed" in r.stderr
    assert f"{where} channel c1: key 'dataDirs': lists 2 directories" in r.stderr


def test_http_handler_class_is_checked_at_validate(tmp_path):
    conf = tmp_path / "h.properties"
    body = (
        "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n"
        "a1.sources.r1.type = http\na1.sources.r1.port = 5140\na1.sources.r1.channels = c1\n"
        "a1.sources.r1.handler = {h}\n"
        "a1.channels.c1.type = memory\na1.sinks.k1.type = logger\na1.sinks.k1.channel = c1\n"
    )
    conf.write_text(body.format(h="org.example.rest.RestHandler"))
    r = flumed("validate", "-f", str(conf))
    assert r.returncode == 1
    assert "source r1: key 'handler': cannot import 'org.example.rest.RestHandler'" in r.stderr
    conf.write_text(body.format(h="org.apache.flume.source.http.SomeOtherHandler"))
    r = flumed("validate", "-f", str(conf))
    assert "Flume's org.apache.flume.source.http.SomeOtherHandler is not available" in r.stderr
    conf.write_text(body.format(h="json:JSONDecoder"))  # importable, but no parse()
    r = flumed("validate", "-f", str(conf))
    assert r.returncode == 1 and "has no parse(request) method" in r.stderr


def test_convert_list_lines_whose_components_have_no_keys(tmp_path):
    conf = tmp_path / "frag.properties"
    conf.write_text("a1.sources = r1\na1.channels = c1\na1.sinks = k1 k2\n")
    r = flumed("convert", str(conf))
    assert r.returncode == 0, r.stderr
    for c in ("sources.r1", "channels.c1", "sinks.k1", "sinks.k2"):
        assert f"[agents.a1.{c}]" in r.stdout
    # The same verdict before and after conversion: both refuse the missing types.
    toml = tmp_path / "frag.toml"
    toml.write_text(r.stdout)
    a, b = flumed("validate", "-f", str(conf)), flumed("validate", "-f", str(toml))
    assert a.returncode == b.returncode == 1
    assert sorted(a.stderr.replace(str(conf), "F").splitlines()) == sorted(
        b.stderr.replace(str(toml), "F").splitlines()
    )
