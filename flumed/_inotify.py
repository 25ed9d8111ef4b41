"""inotify through ctypes (Linux): directory watches on one descriptor, read by the
event loop. Used by the taildir source to wake up when a watched directory changes."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Callable

log = logging.getLogger("flumed.inotify")

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_WATCH_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)
_STRUCTURAL = _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED
_HEADER = struct.Struct("iIII")


class Inotify:
    """Directory watches on one inotify descriptor, read by the event loop.

    `on_change(directory, name, structural)` is called for each event (`name` empty
    for the directory itself); `on_overflow()` when the kernel queue overflowed.
    Raises OSError from `__init__` where inotify is not available.
    """

    def __init__(
        self,
        on_change: Callable[[str, str, bool], None],
        on_overflow: Callable[[], None],
    ) -> None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        self.fd: int = fd
        self._dirs: dict[int, str] = {}
        self._wds: dict[str, int] = {}
        self._on_change = on_change
        self._on_overflow = on_overflow
        self._loop = asyncio.get_running_loop()
        self._armed = False

    def watch(self, directory: str) -> bool:
        """Watch `directory`; False if it cannot be watched (missing, no permission)."""
        if directory in self._wds:
            return True
        wd = self._add(self.fd, os.fsencode(directory), _WATCH_MASK)
        if wd < 0:
            return False
        self._wds[directory] = wd
        self._dirs[wd] = directory
        return True

    def watching(self, directory: str) -> bool:
        return directory in self._wds

    def arm(self) -> None:
        """Read events at the next loop turn they arrive. Disarmed after each read, so
        that a busy writer's events coalesce in the kernel while the source is reading."""
        if not self._armed:
            self._armed = True
            self._loop.add_reader(self.fd, self._read)

    def _read(self) -> None:
        self._loop.remove_reader(self.fd)
        self._armed = False
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        off = 0
        while off + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, off)
            off += _HEADER.size
            name = os.fsdecode(data[off : off + length].rstrip(b"\0"))
            off += length
            if mask & _IN_Q_OVERFLOW:
                self._on_overflow()
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & _GONE and not name:
                self._dirs.pop(wd, None)
                self._wds.pop(directory, None)
                if not mask & _IN_IGNORED:
                    self._rm(self.fd, wd)
            self._on_change(directory, name, bool(mask & (_STRUCTURAL | _GONE)))

    def close(self) -> None:
        if self._armed:
            self._loop.remove_reader(self.fd)
            self._armed = False
        os.close(self.fd)
