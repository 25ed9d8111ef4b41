"""File channel against memory channel: seq-like source -> channel -> null, in-process.

`python -m tests.bench file_channel`. Batches of 1,000 events of 200 bytes; the file
channel fsyncs every commit (fsyncPerTransaction = true). The producer commits through
a ChannelProcessor as a source does; the real null sink drains through a SinkRunner.
Rounds alternate file and memory (the machine is noisy); medians are printed, with
the bytes the process wrote to disk per event (/proc/self/io) for the file channel.
The file channel fsyncs every commit unless the line says otherwise.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from flumed.channels.base import Channel
from flumed.channels.file import FileChannel, FileChannelConfig
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.event import Event
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import SelectorConfig, build_selector
from flumed.sinks.null import NullSink, NullSinkConfig
from flumed.sinks.runner import DefaultSinkProcessor, SinkRunner
from tests.bench import _harness

TOTAL = 400_000
BATCH = 1000
BODY = 200
ROUNDS = 3


def written_bytes() -> int:
    """Bytes this process caused to be written to storage (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


#: label -> file channel keys (None: the memory channel)
VARIANTS: dict[str, dict[str, object] | None] = {
    "file": {},
    "file (fsyncPerTransaction = false)": {"fsyncPerTransaction": False},
    "file (cacheBytes = 0: every take reads the disk)": {"cacheBytes": 0},
    # Filled in by main() when keytool is there to make the JCEKS key store.
    "file (encrypted AES-GCM, cacheBytes = 0)": {"cacheBytes": 0, "encryption": {}},
    "memory": None,
}


def make_key_store(directory: str) -> dict[str, str] | None:
    """Flume's encryption.* keys over a JCEKS store made by keytool (None without it)."""
    if shutil.which("keytool") is None:
        return None
    store, pw = Path(directory) / "keys.jceks", Path(directory) / "pw"
    pw.write_text("bench-pass")
    subprocess.run(
        [
            *("keytool", "-genseckey", "-alias", "key-0", "-keyalg", "AES", "-keysize", "256"),
            *("-storetype", "JCEKS", "-keystore", str(store)),
            *("-storepass", "bench-pass", "-keypass", "bench-pass"),
        ],
        check=True,
        capture_output=True,
    )
    return {
        "activeKey": "key-0",
        "keyProvider": "JCEKSFILE",
        "keyProvider.keyStoreFile": str(store),
        "keyProvider.keyStorePasswordFile": str(pw),
    }


def make_channel(variant: str, directory: str) -> Channel:
    keys = VARIANTS[variant]
    if keys is None:
        return MemoryChannel("c1", MemoryChannelConfig(capacity=100_000, transactionCapacity=BATCH))
    cfg = FileChannelConfig(
        dataDirs=directory,
        capacity=100_000,
        transactionCapacity=BATCH,
        minimumRequiredSpace=0,
        **keys,  # type: ignore[arg-type]
    )
    return FileChannel("c1", cfg)


async def run_once(variant: str, total: int) -> tuple[float, int]:
    """Returns (seconds from first put to last take, bytes written to disk)."""
    with tempfile.TemporaryDirectory(prefix="flumed-bench-") as tmp:
        ch = make_channel(variant, tmp)
        await ch.start()
        processor = ChannelProcessor(build_selector([ch], SelectorConfig()))
        sink = NullSink("k1", NullSinkConfig(batchSize=BATCH))
        sink.channel = ch
        await sink.start()
        runner = SinkRunner(DefaultSinkProcessor("k1", [sink]))
        _harness.started()
        w0 = written_bytes()
        t0 = time.perf_counter()
        runner.start()
        pad = b"%0" + str(BODY).encode() + b"d"
        for start in range(0, total, BATCH):
            await processor.process_batch([Event(pad % i) for i in range(start, start + BATCH)])
        while sink.counter.EventDrainSuccessCount < total:
            await ch._not_full.wait(1.0)  # woken by every take commit
        dt = time.perf_counter() - t0
        await runner.stop(5.0)
        await sink.stop()
        await ch.stop()
        return dt, written_bytes() - w0


def main() -> None:
    keys_dir = tempfile.mkdtemp(prefix="flumed-bench-keys-")
    enc = make_key_store(keys_dir)
    for variant, keys in list(VARIANTS.items()):
        if keys is not None and "encryption" in keys:
            if enc is None:
                del VARIANTS[variant]
            else:
                keys["encryption"] = enc

    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    written: dict[str, list[int]] = {v: [] for v in VARIANTS}
    for _ in range(ROUNDS):
        for variant in VARIANTS:
            dt, wb = _harness.run(run_once(variant, TOTAL))
            rates[variant].append(TOTAL / dt)
            written[variant].append(wb)
    for variant in VARIANTS:
        r = statistics.median(rates[variant])
        extra = ""
        if VARIANTS[variant] is not None:
            per_event = statistics.median(written[variant]) / TOTAL
            extra = f", {per_event:,.0f} bytes written per event"
        print(
            f"seq -> {variant} -> null (batch {BATCH}, {BODY}-byte events): {r:,.0f} events/s, "
            f"{r * BODY / 1e6:.1f} MB/s{extra}",
            flush=True,
        )
    shutil.rmtree(keys_dir, ignore_errors=True)
