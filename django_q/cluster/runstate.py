"""What a worker runs right now, in a small file that the worker and the pusher both map into memory.

The worker writes it as it takes, starts and finishes each job, with no
system call; the pusher reads it for timeouts, cancels, running records,
the status, and to tell, when a worker dies, which of its jobs ran. A
message per task saying "started" is not needed, so the outcomes of short
tasks can travel to the pusher several to a message.

The layout (channels.STATE_LAYOUT) is a seqlock: `seq` is odd while the
worker writes, and a reader that saw it change reads again.
"""

from __future__ import annotations

import mmap
import os
import time
from typing import NamedTuple

from .channels import STATE_ID_MAX as ID_MAX, STATE_LAYOUT as _LAYOUT, STATE_SEQ as _SEQ


class Seen(NamedTuple):
    """One consistent read of a worker's state."""

    taken: int  # jobs the worker took from its queue since it connected
    running: str | None  # delivery id of the job it runs now, None between jobs
    started: float  # epoch seconds the running job started
    started_mono: float  # the same, time.monotonic()
    timeout: float | None


class RunState:
    """One worker's state file: `write()` in the worker, `read()` in the pusher."""

    def __init__(self, file: str, writer: bool) -> None:
        self.file = file
        if writer:
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(fd, _LAYOUT.size)
        else:
            fd = os.open(file, os.O_RDONLY)
        try:
            self.map = mmap.mmap(fd, _LAYOUT.size, access=mmap.ACCESS_WRITE if writer else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.seq = 0

    def write(self, taken: int, running: str | None = None, timeout: float | None = None) -> None:
        """Record the jobs taken so far and the one running now (None: between jobs)."""
        raw = running.encode()[:ID_MAX] if running is not None else b""
        now = (time.time(), time.monotonic()) if running is not None else (0.0, 0.0)
        self.seq += 1  # odd: being written
        _SEQ.pack_into(self.map, 0, self.seq)
        _LAYOUT.pack_into(self.map, 0, self.seq, taken, *now, timeout or 0.0, len(raw), raw)
        self.seq += 1  # even again, last: the fields are whole
        _SEQ.pack_into(self.map, 0, self.seq)

    def read(self) -> Seen | None:
        """A consistent view of the state, or None if the worker kept writing while we read."""
        for _ in range(5):
            seq, taken, started, started_mono, timeout, size, raw = _LAYOUT.unpack_from(self.map, 0)
            if seq % 2 or _SEQ.unpack_from(self.map, 0)[0] != seq:
                continue
            running = raw[:size].decode() if started else None
            return Seen(taken, running, started, started_mono, timeout or None)
        return None

    def close(self) -> None:
        self.map.close()

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.file)
        except OSError:
            pass
