"""Flume's TLS keys with Java keystores made by keytool, end to end (issue 16 point 2):
seq -> avro/thrift sink (JKS/PKCS12 truststore) -> TLS -> avro/thrift source (JKS/PKCS12
keystore) -> record sink, every event arriving; a properties file in Flume's spelling."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flumed.agent import Agent
from flumed.config.graph import build_agent
from flumed.config.loader import load_config
from tests.util import free_port, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("keytool") is None, reason="keytool (Java) is not installed"
)


def keytool(*args: str) -> None:
    subprocess.run(["keytool", *args], check=True, capture_output=True)


def make_stores(d: Path, kind: str) -> tuple[Path, Path]:
    ks, ts, der = d / f"server.{kind.lower()}", d / f"trust.{kind.lower()}", d / "srv.der"
    keytool(
        *("-genkeypair", "-alias", "srv", "-keyalg", "RSA", "-dname", "CN=localhost"),
        *("-ext", "SAN=dns:localhost,ip:127.0.0.1", "-validity", "2", "-storetype", kind),
        *("-keystore", str(ks), "-storepass", "ks-secret", "-keypass", "ks-secret"),
    )
    keytool("-exportcert", "-alias", "srv", "-keystore", str(ks), "-storepass", "ks-secret",
            "-file", str(der))  # fmt: skip
    keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(der), "-storetype", kind,
            "-keystore", str(ts), "-storepass", "ts-secret")  # fmt: skip
    return ks, ts


async def start(path: Path, name: str) -> Agent:
    loaded = load_config(path)
    agent = Agent(build_agent(loaded.doc, name, str(path), strict=False), grace=1.0)
    await agent.start()
    return agent


@pytest.mark.parametrize(("rpc", "kind"), [("avro", "JKS"), ("thrift", "PKCS12")])
async def test_tier_over_tls_with_keytool_stores(tmp_path, rpc, kind):
    ks, ts = make_stores(tmp_path, kind)
    port = free_port()
    out = tmp_path / "out.txt"
    down = tmp_path / "down.properties"
    down.write_text(
        f"""
b.sources = r
b.channels = c
b.sinks = k
b.sources.r.type = {rpc}
b.sources.r.bind = 127.0.0.1
b.sources.r.port = {port}
b.sources.r.channels = c
b.sources.r.ssl = true
b.sources.r.keystore = {ks}
b.sources.r.keystore-password = ks-secret
b.sources.r.keystore-type = {kind}
b.channels.c.type = memory
b.sinks.k.type = tests.support.record_sink:RecordSink
b.sinks.k.path = {out}
b.sinks.k.channel = c
"""
    )
    up = tmp_path / "up.properties"
    up.write_text(
        f"""
a.sources = r
a.channels = c
a.sinks = k
a.sources.r.type = seq
a.sources.r.totalEvents = 500
a.sources.r.batchSize = 50
a.sources.r.channels = c
a.channels.c.type = memory
a.sinks.k.type = {rpc}
a.sinks.k.hostname = 127.0.0.1
a.sinks.k.port = {port}
a.sinks.k.channel = c
a.sinks.k.ssl = true
a.sinks.k.truststore = {ts}
a.sinks.k.truststore-password = ts-secret
a.sinks.k.truststore-type = {kind}
"""
    )
    b = await start(down, "b")
    a = await start(up, "a")
    try:
        await wait_until(
            lambda: out.exists() and len(out.read_bytes().splitlines()) >= 500, 60, "500 events"
        )
    finally:
        await a.stop()
        await b.stop()
    assert sorted(int(x) for x in out.read_bytes().splitlines()) == list(range(500))
