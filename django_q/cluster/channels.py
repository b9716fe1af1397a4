"""Every file, pipe and signal the cluster's processes share: where it is, how it is encoded, who writes and reads it.

The sentinel makes one private folder per cluster (`tempfile.mkdtemp`) and
removes it when the cluster stops; every file below lives in it.

Each channel: what it is and how it is encoded; who writes it; who reads it.

- `pusher.sock` (`socket_path`): a unix socket, authenticated, carrying the
  pickled messages of cluster.messages. The pusher binds and listens; workers
  connect.
- `state-{pid}` (`state_path`): worker `pid`'s state, mapped into memory by
  both sides; a seqlock laid out as STATE_LAYOUT then STATE_PROGRESS (see
  cluster.runstate). Worker `pid` writes (its running task's progress
  reports too); the pusher reads (timeouts, cancels, running records, the
  status with the progress, and which jobs a worker that died had taken).
- `cancel-{pid}` (`cancel_path`): delivery ids, a line each
  (`encode_cancels`). The pusher writes; worker `pid` reads it after
  CANCEL_SIGNAL.
- CANCEL_SIGNAL (SIGUSR1): the pusher sends; the worker reads its cancel file
  and raises TaskCancelled in its running task if that task is listed.
- KILL_SIGNAL (SIGKILL): the pusher sends to a worker past its task's timeout,
  or past `cancel_grace` after a cancel.
- `task-modules` (`task_modules_path`): module names, a line each, appended
  (`encode_module`). Workers write (with `preload_tasks`); the sentinel reads
  whole lines before it forks a worker.
- The notice pipe (os.pipe, non-blocking): `Notice` lines, "index pid\n"
  (`encode_notice`). A forked worker about to be recycled writes; the
  sentinel reads and forks its replacement early.
- The wake pipe (multiprocessing.Pipe, inside the pusher's process): one
  `Wake` byte a message. The pusher's listener, fetcher, lease and saver
  threads write; the pusher's loop reads, to stop waiting.
- STOP_SIGNALS (SIGTERM, SIGINT): from the user or a process manager to the
  sentinel, which stops the cluster gracefully; its children ignore both.
- GRACEFUL_STOP (SIGTERM): the sentinel sends it to the pusher (stop taking
  tasks and scheduling, finish, exit), again every sentinel.RESTOP seconds
  until the pusher exits: a pusher still starting ignores it.
"""

from __future__ import annotations

import enum
import os
import signal
import struct
from collections.abc import Iterable
from typing import NamedTuple

SOCKET = "pusher.sock"

CANCEL_SIGNAL = signal.SIGUSR1
KILL_SIGNAL = signal.SIGKILL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACEFUL_STOP = signal.SIGTERM

# The state file: seq, jobs taken, epoch started, monotonic started, timeout
# (0: none), id length, id. `seq` is odd while the worker writes.
STATE_LAYOUT = struct.Struct("<IIdddB64s")
STATE_SEQ = struct.Struct("<I")
STATE_ID_MAX = 64
# Then the running task's last progress report (context.Progress), under the
# same seq: reported (0/1), done, total (NaN: none), note length, note (UTF-8,
# cut to STATE_NOTE_MAX bytes). Worker `pid` writes it as the task reports.
STATE_PROGRESS = struct.Struct("<BddH800s")
STATE_NOTE_MAX = 800
STATE_SIZE = STATE_LAYOUT.size + STATE_PROGRESS.size


def socket_path(folder: str) -> str:
    """The pusher's socket in the cluster's folder."""
    return os.path.join(folder, SOCKET)


def folder_of(address: str) -> str:
    """The cluster's folder, from the pusher's socket path that every process is given."""
    return os.path.dirname(address)


def state_path(folder: str, pid: int) -> str:
    """The state file of worker `pid`."""
    return os.path.join(folder, f"state-{pid}")


def cancel_path(folder: str, pid: int) -> str:
    """Where the pusher lists the delivery ids of worker `pid` that cancel() wants stopped or skipped."""
    return os.path.join(folder, f"cancel-{pid}")


def encode_cancels(ids: Iterable[str]) -> str:
    """The cancel file's text: the ids, a line each (the pusher rewrites the whole file)."""
    return "\n".join(ids)


def decode_cancels(text: str) -> set[str]:
    """The ids a cancel file names."""
    return set(text.split())


def task_modules_path(folder: str) -> str:
    """Where the workers name the modules of the tasks they imported themselves."""
    return os.path.join(folder, "task-modules")


def encode_module(name: str) -> str:
    """One line of the task-modules file; a line is written whole, with one write."""
    return name + "\n"


def decode_modules(data: bytes) -> tuple[list[str], int]:
    """The module names in the whole lines of `data`, and the bytes they take (a worker may be writing the rest)."""
    whole = data.rfind(b"\n") + 1
    return data[:whole].decode().split(), whole


class Notice(NamedTuple):
    """Worker to sentinel, through the notice pipe: worker number `worker`, process `pid`, is about to be recycled."""

    worker: int  # not `index`, which would hide tuple.index
    pid: int


def encode_notice(notice: Notice) -> bytes:
    """A line well under PIPE_BUF, so that writes of several workers never interleave."""
    return f"{notice.worker} {notice.pid}\n".encode()


def decode_notices(data: bytes) -> list[Notice]:
    """The well-formed notices in what was read from the pipe."""
    notices = []
    for line in data.decode().split("\n"):
        index, _, pid = line.partition(" ")
        if index.isdigit() and pid.isdigit():
            notices.append(Notice(int(index), int(pid)))
    return notices


class Wake(enum.Enum):
    """Why a thread of the pusher's process woke its loop: one byte on the wake pipe."""

    ARRIVED = b"a"  # the listener queued a new connection
    CANCELS = b"c"  # the lease thread took new cancel requests, or found deliveries lost
    FETCHED = b"f"  # the fetcher added deliveries to the buffer and the loop was busy: it deals them out
    FETCHER_EXITED = b"x"  # the fetcher stopped (a graceful stop can hand back the buffer)
    SAVED = b"s"  # the saver thread saved a batch (its deliveries can be acked)
