"""`${...}` substitution and config filters (issue 16, point 1), in properties and TOML,
resolved before validation; missing variables named; secrets kept out of messages and
out of `flumed convert`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flumed.config.graph import build_agent
from flumed.config.loader import load_config
from flumed.errors import ConfigError

PROPS = """\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
"""

TOML = """\
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = "{port}"
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
"""


def build(tmp_path: Path, text: str, name: str, sysprops: dict[str, str] | None = None):
    p = tmp_path / name
    p.write_text(text)
    loaded = load_config(p, sysprops)
    return build_agent(loaded.doc, "a1", str(p), strict=not loaded.properties)


def flumed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumed", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(("template", "name"), [(PROPS, "a.properties"), (TOML, "a.toml")])
def test_env_sys_and_bare_names_resolve_in_properties_and_toml(
    tmp_path, monkeypatch, template, name
):
    monkeypatch.setenv("NC_PORT", "44123")
    assert (
        build(tmp_path, template.format(port="${env:NC_PORT}"), name).sources["r1"].config.port
        == 44123
    )
    spec = build(tmp_path, template.format(port="${sys:NC_PORT}"), name, {"NC_PORT": "44124"})
    assert spec.sources["r1"].config.port == 44124
    # A bare name: the environment, when the file does not set it.
    assert (
        build(tmp_path, template.format(port="${NC_PORT}"), name).sources["r1"].config.port == 44123
    )


def test_bare_name_from_the_file_itself_as_flumes_override_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NC_PORT", raising=False)
    text = "NC_PORT = 44125\n" + PROPS.format(port="${NC_PORT}")
    assert build(tmp_path, text, "a.properties").sources["r1"].config.port == 44125
    toml = "[vars]\nNC_PORT = 44126\n" + TOML.format(port="${NC_PORT}")
    assert build(tmp_path, toml, "a.toml").sources["r1"].config.port == 44126


def test_substituted_port_is_checked_as_a_port_without_showing_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("NC_PORT", "s3cr3t-not-a-port")
    with pytest.raises(ConfigError) as ei:
        build(tmp_path, PROPS.format(port="${env:NC_PORT}"), "a.properties")
    msg = str(ei.value)
    assert "source r1: key 'port': expected an integer" in msg
    assert "${env:NC_PORT}" in msg
    assert "s3cr3t" not in msg
    monkeypatch.setenv("NC_PORT", "70000")
    with pytest.raises(ConfigError, match="key 'port': must be <= 65535"):
        build(tmp_path, PROPS.format(port="${env:NC_PORT}"), "a.properties")


@pytest.mark.parametrize(
    ("ref", "named"),
    [
        ("${env:NO_SUCH_VAR_X}", "environment variable NO_SUCH_VAR_X is not set"),
        ("${sys:NO_SUCH_PROP}", "system property NO_SUCH_PROP is not set (give -DNO_SUCH_PROP"),
        ("${NO_SUCH_BARE}", "NO_SUCH_BARE is neither set in the file nor an environment"),
        ("${f9['k']}", "no config filter named 'f9'"),
        ("${date:yyyy}", "unknown lookup 'date'"),
    ],
)
def test_missing_variable_is_an_error_naming_file_agent_key_and_variable(tmp_path, ref, named):
    with pytest.raises(ConfigError) as ei:
        build(tmp_path, PROPS.format(port=ref), "a.properties")
    msg = str(ei.value)
    assert f"a.properties: agent a1: source r1: key 'port': {ref}: {named}" in msg


def test_escaped_dollar_is_literal(tmp_path):
    text = PROPS.format(port="4412") + "a1.sources.r1.interceptors = i1\n"
    text += "a1.sources.r1.interceptors.i1.type = static\n"
    text += "a1.sources.r1.interceptors.i1.key = k\n"
    text += "a1.sources.r1.interceptors.i1.value = $${HOME}\n"
    spec = build(tmp_path, text, "a.properties")
    assert spec.sources["r1"].interceptors[0].config.value == "${HOME}"


FILTERED = """\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.configfilters = f1
{filter}
a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = ${{f1['nc_port']}}
a1.sources.r1.channels = c1
a1.sources.r1.interceptors = i1
a1.sources.r1.interceptors.i1.type = static
a1.sources.r1.interceptors.i1.key = password
a1.sources.r1.interceptors.i1.value = pre-${{f1["my_password"]}}-${{f1[my_password]}}
a1.channels.c1.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
"""


def test_env_config_filter(tmp_path, monkeypatch):
    monkeypatch.setenv("nc_port", "44127")
    monkeypatch.setenv("my_password", "Secret123")
    spec = build(tmp_path, FILTERED.format(filter="a1.configfilters.f1.type = env"), "a.conf")
    assert spec.sources["r1"].config.port == 44127
    assert spec.sources["r1"].interceptors[0].config.value == "pre-Secret123-Secret123"


def test_external_config_filter_runs_command_with_the_key(tmp_path):
    script = tmp_path / "resolver.sh"
    script.write_text(
        '#!/bin/sh\ncase "$1" in nc_port) echo 44128;; my_password) printf "Secret123\\nx\\n";;'
        " *) exit 3;; esac\n"
    )
    script.chmod(0o700)
    f = f"a1.configfilters.f1.type = external\na1.configfilters.f1.command = {script}\n"
    f += "a1.configfilters.f1.charset = UTF-8"
    spec = build(tmp_path, FILTERED.format(filter=f), "a.properties")
    assert spec.sources["r1"].config.port == 44128
    assert spec.sources["r1"].interceptors[0].config.value == "pre-Secret123-Secret123"
    bad = FILTERED.format(filter=f).replace("['nc_port']", "['other']")
    with pytest.raises(ConfigError, match=r"resolver.sh' exited with status 3 for key other"):
        build(tmp_path, bad, "a.properties")


def test_external_filter_needs_command_and_class_names_work(tmp_path):
    f = "a1.configfilters.f1.type = org.apache.flume.configfilter.ExternalProcessConfigFilter"
    with pytest.raises(ConfigError, match="configfilter f1: missing required key 'command'"):
        build(tmp_path, FILTERED.format(filter=f), "a.properties")
    with pytest.raises(ConfigError, match="configfilter f1: key 'type': vault: expected env"):
        build(tmp_path, FILTERED.format(filter="a1.configfilters.f1.type = vault"), "a.properties")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="keytool (Java) is not installed")
def test_hadoop_credential_store_filter_reads_a_keytool_jceks(tmp_path, monkeypatch):
    store = tmp_path / "creds.jceks"
    for alias, secret in (("nc_port", "44129"), ("my_password", "Secret123")):
        subprocess.run(
            [
                *("keytool", "-importpass", "-alias", alias, "-storetype", "JCEKS"),
                *("-keystore", str(store), "-storepass", "credpass", "-keypass", "credpass"),
            ],
            input=secret,
            text=True,
            check=True,
            capture_output=True,
        )
    monkeypatch.setenv("HADOOP_CREDSTORE_PASSWORD", "credpass")
    f = "a1.configfilters.f1.type = hadoop\n"
    f += f"a1.configfilters.f1.credential.provider.path = jceks://file{store}"
    spec = build(tmp_path, FILTERED.format(filter=f), "a.properties")
    assert spec.sources["r1"].config.port == 44129
    assert spec.sources["r1"].interceptors[0].config.value == "pre-Secret123-Secret123"
    monkeypatch.setenv("HADOOP_CREDSTORE_PASSWORD", "wrong-password")
    with pytest.raises(ConfigError, match=r"config filter f1: .*wrong keystore password"):
        build(tmp_path, FILTERED.format(filter=f), "a.properties")


def test_cli_d_arguments_and_secrets_stay_out_of_logs_and_convert(tmp_path):
    conf = tmp_path / "a.properties"
    conf.write_text(
        FILTERED.format(filter="a1.configfilters.f1.type = env").replace(
            "${f1['nc_port']}", "${sys:NC_PORT}"
        )
    )
    env = {"my_password": "Secret123"}
    r = flumed("validate", "-f", str(conf), "-DNC_PORT=44130", env=env)
    assert r.returncode == 0, r.stderr
    r = flumed("validate", "-f", str(conf), env=env)
    assert r.returncode == 1 and "system property NC_PORT is not set" in r.stderr
    r = flumed("convert", str(conf), env=env)
    assert r.returncode == 0, r.stderr
    assert "Secret123" not in r.stdout
    assert '${f1[\\"my_password\\"]}' in r.stdout or '${f1["my_password"]}' in r.stdout
    assert "${sys:NC_PORT}" in r.stdout
    # The converted TOML resolves the same way.
    toml = tmp_path / "a.toml"
    toml.write_text(r.stdout)
    r = flumed("validate", "-f", str(toml), "-DNC_PORT=44130", env=env)
    assert r.returncode == 0, r.stderr
    # The agent takes -D too; a bad value is refused naming the variable, not the secret.
    r = flumed("agent", "-f", str(conf), "-DNC_PORT=x", env=env)
    assert r.returncode == 2
    assert "${sys:NC_PORT}" in r.stderr and "Secret123" not in r.stderr + r.stdout
