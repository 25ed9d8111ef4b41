"""The jms source (STOMP) against real brokers: a private ActiveMQ started by the test
(Debian's activemq package, Java) and this machine's RabbitMQ with its STOMP plugin.
100,000 messages with the agent SIGKILLed twice: every message delivered, duplicates
within one batch per kill. Properties become headers, selectors filter (ActiveMQ), a
durable topic subscription keeps what was published while the agent was down."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.util import free_port, wait_until_sync

ACTIVEMQ_JAR = Path("/usr/share/activemq/bin/activemq.jar")
TOTAL = 100_000
BATCH = 500

BROKER_XML = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
  http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="flumedtest"
          dataDirectory="{data}" persistent="true">
    <persistenceAdapter><kahaDB directory="{data}/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{port}"/>
    </transportConnectors>
  </broker>
</beans>
"""


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def activemq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private ActiveMQ broker with a STOMP connector on a free port."""
    if shutil.which("java") is None or not ACTIVEMQ_JAR.exists():
        pytest.skip("ActiveMQ needs Java and Debian's activemq package (.ci/run installs it)")
    base = tmp_path_factory.mktemp("activemq")
    port = free_port()
    (base / "conf").mkdir()
    (base / "conf" / "activemq.xml").write_text(BROKER_XML.format(data=base / "data", port=port))
    log = open(base / "broker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            "java", "-Xmx256M", "-Dactivemq.home=/usr/share/activemq",
            f"-Dactivemq.base={base}", f"-Dactivemq.conf={base / 'conf'}",
            f"-Dactivemq.data={base / 'data'}", "-jar", str(ACTIVEMQ_JAR),
            "start", f"xbean:file:{base / 'conf' / 'activemq.xml'}",
        ],
        stdout=log, stderr=log, cwd=base,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):
            assert proc.poll() is None, (base / "broker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ActiveMQ did not open its STOMP port"
            time.sleep(0.2)
        yield port
    finally:
        proc.kill()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def rabbit_stomp() -> int:
    if not _listening(5672):
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    if not _listening(61613) and shutil.which("rabbitmq-plugins"):
        subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_stomp"], capture_output=True)
        deadline = time.monotonic() + 30
        while not _listening(61613) and time.monotonic() < deadline:
            time.sleep(0.2)
    if not _listening(61613):
        pytest.skip("RabbitMQ's STOMP plugin (rabbitmq_stomp) is not listening on 61613")
    return 61613


def stomp_send(port: int, destination: str, messages: list[tuple[bytes, dict[str, str]]]) -> None:
    """Publish with raw STOMP frames (written here, not with flumed's client), persistent,
    confirmed by a receipt every 1,000 messages."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    f = s.makefile("rb")

    def frame() -> bytes:
        out = b""
        while not out.endswith(b"\0"):
            byte = f.read(1)
            if not byte:
                raise AssertionError("broker closed")
            if out or byte != b"\n":  # newlines between frames are heart-beats
                out += byte
        return out

    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")
    assert frame().lstrip(b"\n").startswith(b"CONNECTED")
    for start in range(0, len(messages), 1000):
        chunk = messages[start : start + 1000]
        out = []
        for i, (body, props) in enumerate(chunk):
            head = f"SEND\ndestination:{destination}\npersistent:true\n"
            head += "".join(f"{k}:{v}\n" for k, v in props.items())
            if i == len(chunk) - 1:
                head += f"receipt:r{start}\n"
            out.append(head.encode() + b"\n" + body + b"\0")
        s.sendall(b"".join(out))
        assert b"RECEIPT" in frame()
    s.sendall(b"DISCONNECT\n\n\0")
    s.close()


def delivered(agent) -> list[bytes]:
    out = []
    for line in agent.stderr_path.read_text(errors="replace").splitlines():
        if "flumed.sinks.logger: Event: {" in line and line.endswith(" }"):
            out.append(line.split()[-2].encode())
    return out


def agent_conf(port: int, dest: str, data: Path, extra: str = "") -> str:
    return f"""
[agents.a1.sources.r1]
type = "org.apache.flume.source.jms.JMSSource"
providerURL = "stomp://127.0.0.1:{port}"
destinationName = "{dest}"
userName = "guest"
passwordFile = "{data.parent / "password"}"
batchSize = {BATCH}
pollTimeout = 200
channels = ["c1"]
{extra}
[agents.a1.channels.c1]
type = "file"
dataDirs = "{data}"
minimumRequiredSpace = 0
[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
batchSize = {BATCH}
"""


def _kill_twice_and_count(agent, total: int) -> None:
    for mark in (total // 4, total // 2):
        wait_until_sync(lambda m=mark: len(delivered(agent)) > m, timeout=300, what=f">{mark}")
        agent.kill()
        agent.start()
    want = {b"%d" % i for i in range(total)}
    wait_until_sync(lambda: set(delivered(agent)) >= want, timeout=300, what="all delivered")
    counts = Counter(delivered(agent))
    assert set(counts) == want
    assert sum(n - 1 for n in counts.values()) <= 2 * 2 * BATCH  # two kills, source + sink
    assert agent.terminate() == 0


@pytest.mark.slow
def test_activemq_100k_messages_two_sigkills(activemq, agent_factory, tmp_path):
    queue = f"flumed.{uuid.uuid4().hex[:8]}"
    (tmp_path / "password").write_text("guest\n")
    stomp_send(activemq, f"/queue/{queue}", [(b"%d" % i, {}) for i in range(TOTAL)])
    agent = agent_factory(agent_conf(activemq, queue, tmp_path / "data"))
    _kill_twice_and_count(agent, TOTAL)


@pytest.mark.slow
def test_rabbitmq_100k_messages_two_sigkills(rabbit_stomp, agent_factory, tmp_path):
    import aio_pika

    queue = f"flumed-jms-{uuid.uuid4().hex[:8]}"
    (tmp_path / "password").write_text("guest\n")

    async def publish() -> None:
        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.declare_queue(queue, durable=True)
            for start in range(0, TOTAL, 2000):
                await asyncio.gather(
                    *(
                        ch.default_exchange.publish(aio_pika.Message(b"%d" % i), queue)
                        for i in range(start, start + 2000)
                    )
                )

    async def delete() -> None:
        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with conn:
            await (await conn.channel()).queue_delete(queue)

    asyncio.run(publish())
    try:
        agent = agent_factory(agent_conf(rabbit_stomp, queue, tmp_path / "data"))
        _kill_twice_and_count(agent, TOTAL)
    finally:
        asyncio.run(delete())


def test_properties_selector_and_charset(activemq, agent_factory, tmp_path):
    queue = f"flumed.sel.{uuid.uuid4().hex[:8]}"
    (tmp_path / "password").write_text("guest\n")
    stomp_send(
        activemq,
        f"/queue/{queue}",
        [(f"é{i}".encode(), {"app": "web" if i % 2 else "db", "n": str(i)}) for i in range(20)],
    )
    extra = 'messageSelector = "app = \'web\'"\n"converter.charset" = "ISO-8859-1"'
    agent = agent_factory(agent_conf(activemq, queue, tmp_path / "data", extra))
    wait_until_sync(lambda: len(delivered(agent)) >= 10, what="the selected messages")
    log = agent.stderr_path.read_text()
    lines = [ln for ln in log.splitlines() if "Event: {" in ln]
    assert len(lines) == 10
    assert all("'app': 'web'" in ln for ln in lines)
    # é in ISO-8859-1 is one byte, e9.
    assert all(" body: e9 " in ln for ln in lines), lines[:2]
    assert "'message-id'" not in log and "'destination'" not in log


def test_durable_topic_subscription_keeps_messages_while_down(activemq, agent_factory, tmp_path):
    topic = f"flumed.t.{uuid.uuid4().hex[:8]}"
    (tmp_path / "password").write_text("guest\n")
    extra = (
        'destinationType = "TOPIC"\ncreateDurableSubscription = true\n'
        'durableSubscriptionName = "flumed-sub"\nclientId = "flumed-test-client"'
    )
    agent = agent_factory(agent_conf(activemq, topic, tmp_path / "data", extra))
    stomp_send(activemq, f"/topic/{topic}", [(b"%d" % i, {}) for i in range(100)])
    wait_until_sync(lambda: len(delivered(agent)) >= 100, what="live messages")
    assert agent.terminate() == 0
    stomp_send(activemq, f"/topic/{topic}", [(b"%d" % i, {}) for i in range(100, 200)])
    agent.start()
    wait_until_sync(
        lambda: set(delivered(agent)) >= {b"%d" % i for i in range(200)},
        what="messages published while the agent was down",
    )


def test_openwire_url_is_refused_naming_the_stomp_port(tmp_path):
    from flumed.config.keys import parse
    from flumed.errors import ConfigError
    from flumed.sources.jms import JMSSourceConfig

    with pytest.raises(ConfigError) as e:
        parse(
            JMSSourceConfig,
            {"providerURL": "tcp://mq.example.com:61616", "destinationName": "q"},
            "source r1",
        )
    assert "use stomp://mq.example.com:61613" in str(e.value)
