"""One bench run at a time on this machine: every run shares Redis db 12 and 15 and the PostgreSQL bench databases.

run.py takes an exclusive flock on LOCK_FILE before it builds a venv or touches
a store, writes who holds it (pid, start time, folder, command) into the file,
and keeps the descriptor open across its re-execution in the harness venv, so
the lock lives exactly as long as the run. A second run stops at once with an
error naming the run that holds it. The file is global (not per work tree):
runs from different work trees share the same Redis and PostgreSQL.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import time
from pathlib import Path

LOCK_FILE = Path(os.environ.get("BENCH_LOCK_FILE", "/tmp/django_q_bench.lock"))
ENV = "BENCH_LOCK_FD"  # the descriptor's number, for the re-executed run


class Busy(SystemExit):
    """Another bench run holds the lock."""


def acquire(path: Path = LOCK_FILE) -> int:
    """Take the lock or raise Busy naming its holder; the descriptor, inheritable, stays open for the run."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "(no details written)"
        os.close(fd)
        raise Busy(f"bench: another bench run holds {path}: {holder}\n"
                   f"bench: two runs would flush each other's Redis databases (12, 15) and PostgreSQL "
                   f"databases; wait for it to end") from None
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    command = shlex.join([sys.executable, *sys.argv])
    os.pwrite(fd, f"pid {os.getpid()}, started {started}, in {os.getcwd()}: {command}\n".encode(), 0)
    os.set_inheritable(fd, True)
    return fd


def inherited() -> int:
    """The descriptor the launching run passed on; stop if it is missing or no longer locked by this run."""
    try:
        fd = int(os.environ[ENV])
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # already ours: succeeds at once
    except (KeyError, ValueError, OSError):
        raise SystemExit(f"bench: run bench/run.py itself: it takes the lock {LOCK_FILE} ({ENV} missing)") from None
    return fd
