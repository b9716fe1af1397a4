"""Linux's inotify, through ctypes: wait until a file of a folder is written. For the SQLite wake-up (wakeup.py).

A commit to a SQLite file writes the file, or its `-wal` file in WAL mode,
with write(2), and inotify reports every such write at once. So an idle
broker can sleep in select(2) until another process commits, instead of
waking every few milliseconds to ask SQLite. The folder is watched, not the
files: SQLite deletes the `-wal` file when its last connection closes and
makes it again with the next one, and a watch on a file ends with the file.

`watch` gives None where inotify is missing (not Linux, no libc, a folder we
may not read, the user's inotify limits reached); the caller then polls.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import sys
import time
from collections.abc import Iterable

IN_MODIFY = 0x00000002  # <sys/inotify.h>: a file in the folder was written
EVENT = struct.Struct("iIII")  # struct inotify_event without its name: wd, mask, cookie, len
READ_SIZE = 64 * 1024

_libc: ctypes.CDLL | None = None


class FolderWrites:
    """An inotify descriptor on `folder`, reporting writes to the files it is told of."""

    def __init__(self, fd: int, names: Iterable[str]) -> None:
        self.fd = fd
        self.names = {os.fsencode(name) for name in names}
        self.pid = os.getpid()

    def wait(self, seconds: float) -> bool:
        """True as soon as one of the files was written since the last call, False after `seconds` without."""
        end = time.monotonic() + seconds
        while True:
            if self._written():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            select.select([self.fd], [], [], left)

    def close(self) -> None:
        """Release the descriptor (one inherited through fork is the parent's to close)."""
        fd, self.fd = self.fd, -1
        if fd >= 0 and self.pid == os.getpid():
            os.close(fd)

    def _written(self) -> bool:
        """Read every event queued so far; whether one names a file of ours."""
        found = False
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return found
            offset = 0
            while offset + EVENT.size <= len(data):
                _, _, _, size = EVENT.unpack_from(data, offset)
                name = data[offset + EVENT.size: offset + EVENT.size + size].rstrip(b"\0")
                found = found or name in self.names
                offset += EVENT.size + size


def watch(folder: str, names: Iterable[str]) -> FolderWrites | None:
    """Writes to `names` in `folder`, or None where inotify cannot watch it."""
    libc = _load()
    if libc is None:
        return None
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(folder), IN_MODIFY) < 0:
        os.close(fd)
        return None
    return FolderWrites(fd, names)


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's among them
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc
