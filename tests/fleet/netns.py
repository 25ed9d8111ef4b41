"""Linux network namespaces as test hosts, joined by veth pairs to a bridge.

Everything lives inside namespaces this module makes: the bridge sits in a "switch"
namespace of its own and each veth pair is created with one end in the switch and the
other in a host's namespace, so the test touches no interface, address or route of the
machine it runs on. Deleting the namespaces removes every link, address, iptables rule
and qdisc the test made.

Names are `PREFIX<pid>-<role>`; `sweep()` deletes (after killing what runs inside)
the namespaces of runs whose process is gone, e.g. a pytest that was SIGKILLed.

`in_netns(ns, fn)` runs `fn` in a thread that joined the namespace (setns(2) changes
the calling thread only), so the test process can open sockets there; `NetnsLoop` keeps
an asyncio loop running in such a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

PREFIX = "flumedfleet"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def why_not() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "the fleet tests need root (ip netns add, veth, iptables)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is missing"
    probe = f"{PREFIX}{os.getpid()}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    try:
        # What the fleet needs beyond a namespace: a bridge, a veth pair, `ip netns exec`
        # (it mounts /sys, which some containers refuse) and setns(2) from a thread.
        ip("-n", probe, "link", "add", "br-probe", "type", "bridge")
        ip("-n", probe, "link", "add", "v-probe", "type", "veth", "peer", "name", "w-probe")
        ip("-n", probe, "link", "set", "v-probe", "master", "br-probe")
        run_in(probe, "true")
        in_netns(probe, lambda: None, timeout=30)
    except (RuntimeError, OSError) as e:
        return f"network namespaces are not usable here: {e}"
    finally:
        delete(probe)
    return None


def ip(*args: str) -> None:
    """Run `ip ARGS`; raises RuntimeError with ip's message on failure."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def run_in(ns: str, *argv: str) -> None:
    """Run a command inside `ns`; raises RuntimeError with its stderr on failure."""
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns}: {r.stderr.strip()}")


def _names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_inside(ns: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete(ns: str) -> None:
    """Kill whatever still runs in `ns`, then delete it (links, rules and all)."""
    _kill_inside(ns)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def sweep() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone; their names."""
    gone = []
    for ns in _names():
        if not ns.startswith(PREFIX):
            continue
        pid = ns[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another run, still going
        delete(ns)
        gone.append(ns)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _enter(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[..., T], *args: Any, timeout: float = 120.0) -> T:
    """Call `fn(*args)` in a new thread that joined namespace `ns`; its result."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            _enter(ns)
            result.append(fn(*args))
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=run, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{fn!r} in {ns} did not return in {timeout}s")
    if error:
        raise error[0]
    return result[0]


class NetnsLoop:
    """An asyncio event loop running in a thread inside namespace `ns`."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"loop-{ns}", daemon=True)
        self._entered: concurrent.futures.Future[None] = concurrent.futures.Future()

    def _run(self) -> None:
        try:
            _enter(self.ns)
        except OSError as e:
            self._entered.set_exception(e)
            return
        self._entered.set_result(None)
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> NetnsLoop:
        self._thread.start()
        self._entered.result(30)
        return self

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        if not self._thread.is_alive():
            self.loop.close()
