"""Hadoop's own readers for the hdfs sink's files: HadoopRead.java compiled at test time
against the Hadoop jars that the pyspark package bundles (the `test` extra installs it),
run on Java 17."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def hadoop_jars() -> str | None:
    """The directory of Hadoop's jars (pyspark's), or None."""
    try:
        import pyspark
    except ImportError:
        return None
    d = Path(pyspark.__file__).parent / "jars"
    return str(d) if any(d.glob("hadoop-client-api-*.jar")) else None


def missing() -> str | None:
    """Why Hadoop's reader cannot run here, or None."""
    if hadoop_jars() is None:
        return "pyspark (Hadoop's jars) is not installed: `pip install -e '.[test]'`"
    if shutil.which("javac") is None or shutil.which("java") is None:
        return "no JDK (javac/java) on this machine: apt-get install openjdk-17-jdk-headless"
    return None


class HadoopReader:
    """Runs HadoopRead (compiled once into `workdir`)."""

    def __init__(self, workdir: Path) -> None:
        jars = hadoop_jars()
        assert jars is not None
        self.classpath = f"{workdir}{os.pathsep}{jars}/*"
        subprocess.run(
            ["javac", "-d", str(workdir), "-cp", f"{jars}/*", str(HERE / "HadoopRead.java")],
            check=True,
            capture_output=True,
        )

    def _run(self, *args: str) -> bytes:
        r = subprocess.run(
            ["java", "-cp", self.classpath, "HadoopRead", *args], capture_output=True, timeout=120
        )
        if r.returncode != 0:
            raise AssertionError(f"Hadoop's reader failed: {r.stderr.decode(errors='replace')}")
        return r.stdout

    def sequence_files(self, *paths: Path) -> dict[str, dict]:
        """Per file: its header facts and its records as (key, value bytes)."""
        out: dict[str, dict] = {}
        cur: dict = {}
        for line in self._run("seq", *map(str, paths)).decode().splitlines():
            if line.startswith("file "):
                _, path, vclass, comp, block, codec = line.split(" ")
                cur = out[path] = {
                    "value_class": vclass,
                    "compressed": comp == "true",
                    "block": block == "true",
                    "codec": None if codec == "-" else codec,
                    "records": [],
                }
            else:
                k, v = line.split("\t")
                cur["records"].append((int(k), bytes.fromhex(v)))
        return out

    def decompress(self, codec_class: str, path: Path) -> bytes:
        """The file read through Hadoop's codec stream."""
        return self._run("stream", codec_class, str(path))


_SHARED: HadoopReader | None = None


def shared_reader() -> HadoopReader:
    """One reader per test process: javac runs once (it takes seconds); its class file
    lives in a temporary directory removed at exit."""
    global _SHARED
    if _SHARED is None:
        workdir = tempfile.mkdtemp(prefix="flumed-hadoopread-")
        atexit.register(shutil.rmtree, workdir, True)
        _SHARED = HadoopReader(Path(workdir))
    return _SHARED
