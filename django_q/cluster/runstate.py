"""What a worker runs right now, in a small file that the worker and the pusher both map into memory.

The worker writes it as it takes, starts and finishes each job, with no
system call; the pusher reads it for timeouts, cancels, running records,
the status, and to tell, when a worker dies, which of its jobs ran. A
message per task saying "started" is not needed, so the outcomes of short
tasks can travel to the pusher several to a message.

The running task's progress reports (django_q.context) are written into the
same file, so that a report costs the task no system call either; the pusher
publishes the last one with the cluster's status.

The layout (channels.STATE_LAYOUT, then STATE_PROGRESS) is a seqlock: `seq` is
odd while the worker writes, and a reader that saw it change reads again.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from ..context import Progress
from .channels import STATE_ID_MAX as ID_MAX, STATE_LAYOUT as _LAYOUT, STATE_NOTE_MAX as NOTE_MAX
from .channels import STATE_PROGRESS as _PROGRESS, STATE_SEQ as _SEQ, STATE_SIZE as _SIZE

_NO_PROGRESS = (0, 0.0, 0.0, 0, b"")


class Seen(NamedTuple):
    """One consistent read of a worker's state."""

    taken: int  # jobs the worker took from its queue since it connected
    running: str | None  # delivery id of the job it runs now, None between jobs
    started: float  # epoch seconds the running job started
    started_mono: float  # the same, time.monotonic()
    timeout: float | None
    progress: Progress | None = None  # the running job's last progress report


class RunState:
    """One worker's state file: `write()` in the worker, `read()` in the pusher."""

    def __init__(self, file: str, writer: bool) -> None:
        self.file = file
        if writer:
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(fd, _SIZE)
        else:
            fd = os.open(file, os.O_RDONLY)
        try:
            self.map = mmap.mmap(fd, _SIZE, access=mmap.ACCESS_WRITE if writer else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.seq = 0
        # The worker's main thread writes; a task may report progress from a thread of its own.
        self.lock = threading.Lock()

    def write(self, taken: int, running: str | None = None, timeout: float | None = None) -> None:
        """Record the jobs taken so far and the one running now (None: between jobs).

        Twice a task: the seqlock of _writing is written out here, without its generator.
        """
        with self.lock:
            self.seq += 1
            _SEQ.pack_into(self.map, 0, self.seq)
            if running is None:  # no job, so its progress is not read
                _LAYOUT.pack_into(self.map, 0, self.seq, taken, 0.0, 0.0, 0.0, 0, b"")
            else:
                raw = running.encode()[:ID_MAX]
                _LAYOUT.pack_into(self.map, 0, self.seq, taken, time.time(), time.monotonic(), timeout or 0.0,
                                  len(raw), raw)
                _PROGRESS.pack_into(self.map, _LAYOUT.size, *_NO_PROGRESS)  # a new job has reported nothing yet
            self.seq += 1
            _SEQ.pack_into(self.map, 0, self.seq)

    def write_progress(self, progress: Progress) -> None:
        """Record the running job's last progress report (context.report_progress_to)."""
        note = progress.note.encode()[:NOTE_MAX]
        total = math.nan if progress.total is None else float(progress.total)
        with self._writing():
            _PROGRESS.pack_into(self.map, _LAYOUT.size, 1, float(progress.done), total, len(note), note)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The seqlock around one write: `seq` odd while the block writes, even again once the fields are whole."""
        with self.lock:
            self.seq += 1
            _SEQ.pack_into(self.map, 0, self.seq)
            yield
            self.seq += 1
            _SEQ.pack_into(self.map, 0, self.seq)

    def read(self) -> Seen | None:
        """A consistent view of the state, or None if the worker kept writing while we read."""
        for _ in range(5):
            seq, taken, started, started_mono, timeout, size, raw = _LAYOUT.unpack_from(self.map, 0)
            reported, done, total, note_size, note = _PROGRESS.unpack_from(self.map, _LAYOUT.size)
            if seq % 2 or _SEQ.unpack_from(self.map, 0)[0] != seq:
                continue
            running = raw[:size].decode() if started else None
            progress = None
            if reported and running is not None:
                progress = Progress(_number(done), None if math.isnan(total) else _number(total),
                                    note[:note_size].decode(errors="ignore"))  # a cut may split a character
            return Seen(taken, running, started, started_mono, timeout or None, progress)
        return None

    def close(self) -> None:
        self.map.close()

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.file)
        except OSError:
            pass


def _number(value: float) -> float:
    """A count read back as the int it most likely was (the file keeps doubles)."""
    return int(value) if value.is_integer() else value
