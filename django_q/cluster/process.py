"""What every cluster process does at start: Django, signals, and reaching the pusher."""

from __future__ import annotations

import importlib
import logging
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

import django
from django.apps import apps

from .. import signals
from .channels import STOP_SIGNALS
from .messages import Hello

try:
    from setproctitle import setproctitle
except ImportError:  # without the [monitor] extra each process keeps the title Python gave it
    def setproctitle(title: str) -> None:
        pass

logger = logging.getLogger("django_q")

CONNECT_PATIENCE = 30.0  # seconds a process waits for the pusher's socket before giving up
# Seconds between tries while the pusher's socket is not there yet: a try costs
# about 10 us (a failed connect), and at start the workers are forked just after
# the pusher, which binds its socket some tens of milliseconds later; a longer
# pause would be waited out in full after it is there, before the first job.
# At 10 ms the first task came 50-70 ms later (median, 25 interleaved starts
# on a loaded 2-core machine): a worker that slept through the bind lost its
# turn on the CPU as well. 1 ms costs a waiting worker about 1 % of a core.
CONNECT_PAUSE = 0.001
HANDSHAKE = 5.0  # seconds either side of a new connection has to take its turn in the handshake


def start(module: str, function: str, *args: Any) -> None:
    """Process target: load Django, then import and run `module.function(*args)`.

    Under the spawn and forkserver start methods the child unpickles its target
    before Django is set up, so the target must not import models; this one
    imports the role's module only after `django.setup()`.
    """
    if not apps.ready:
        django.setup()
    getattr(importlib.import_module(module), function)(*args)


_parent_pid = os.getppid()


def setup(name: str, cluster: str = "", log_level: str | int | None = None) -> None:
    """Make a child process ready: Django loaded (spawn, forkserver), Q_CLUSTER['log_level'] applied,
    stop signals left to the sentinel."""
    global _parent_pid
    _parent_pid = os.getppid()  # the sentinel, or the forkserver it owns
    if not apps.ready:
        django.setup()  # under spawn and forkserver this configures logging anew
    log_to_stderr(log_level)
    set_title(name, cluster)
    # Ctrl-C reaches the whole process group; only the sentinel decides how the
    # cluster stops, so children ignore SIGINT and SIGTERM.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signals.post_spawn.send(sender="django_q", proc_name=name)


def log_to_stderr(level: str | int | None = None) -> None:
    """Show the cluster's log on stderr when the project configured no logging for it (a forked
    process inherits the sentinel's handler; a spawned one makes its own), at `level` if given."""
    logger = logging.getLogger("django_q")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [django_q] %(levelname)s %(processName)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    if level is not None:
        logger.setLevel(level)


def set_title(name: str, cluster: str = "") -> None:
    """Name the process in ps and top: 'django_q <role> [<cluster>]'."""
    setproctitle(f"django_q {name}" + (f" [{cluster}]" if cluster else ""))


def orphaned(parent_pid: int | None = None) -> bool:
    """Whether the process that started us (as of `setup()`) is gone."""
    return os.getppid() != (parent_pid or _parent_pid)


def connect(address: str, authkey: bytes, hello: Hello) -> Connection | None:
    """Connect to the pusher and introduce ourselves; None if the cluster went away first."""
    deadline = time.monotonic() + CONNECT_PATIENCE
    while time.monotonic() < deadline and not orphaned():
        conn = _client(address, authkey)
        if conn is None:
            time.sleep(CONNECT_PAUSE)
            continue
        conn.send(hello)
        return conn
    logger.error("%s: the pusher at %s did not answer", hello.role.value, address)
    return None


def _client(address: str, authkey: bytes) -> Connection | None:
    """An authenticated connection to the pusher's socket, or None if it did not answer in time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except OSError:  # not there yet, or refused: the caller tries again
        sock.close()
        return None
    conn = Connection(sock.detach())
    try:
        # The pusher speaks first; a pusher that stopped accepting must not hang us.
        if not conn.poll(HANDSHAKE):
            raise TimeoutError("no challenge from the pusher")
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
    except Exception:
        conn.close()
        return None
    return conn


class Listener:
    """The pusher's side of `connect()`: takes connections on `address` in a thread of its own.

    Each connection authenticates and introduces itself in a thread of its
    own, so that a client that dies or stalls mid-handshake never blocks the
    next one. Each that does is passed to `arrived(connection, hello)`, from
    the handshake's thread.
    """

    def __init__(self, address: str, authkey: bytes, arrived: Callable[[Connection, Hello], None]) -> None:
        self.authkey = authkey
        self.arrived = arrived
        self.closed = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(64)
        threading.Thread(target=self._accept, name="django_q-accept", daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                sock, _ = self.sock.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(0.01)
                continue
            conn = Connection(sock.detach())
            threading.Thread(target=self._handshake, args=(conn,), name="django_q-handshake", daemon=True).start()

    def _handshake(self, conn: Connection) -> None:
        try:
            deliver_challenge(conn, self.authkey)
            answer_challenge(conn, self.authkey)
            hello = conn.recv() if conn.poll(HANDSHAKE) else None
        except Exception:  # EOF, a bad key, a reset: this client is gone
            hello = None
        if not isinstance(hello, Hello):
            conn.close()
            return
        self.arrived(conn, hello)


class Poller:
    """multiprocessing.connection.wait() on a poll object kept between calls.

    wait() makes a selector and registers every connection on each call: about
    9 us for the pusher's five, against 1 us for a poll that only the changes
    are registered with. The pusher waits once or more for every few tasks.
    """

    def __init__(self) -> None:
        self.poll = select.poll()
        self.conns: dict[int, Connection] = {}  # registered file descriptor -> its connection

    def wait(self, conns: list[Connection], timeout: float | None) -> list[Connection]:
        """The connections of `conns` ready to read, or closed by the other end, waiting up to `timeout` seconds."""
        wanted = {conn.fileno(): conn for conn in conns}
        for fd in [fd for fd, conn in self.conns.items() if wanted.get(fd) is not conn]:
            del self.conns[fd]  # gone (closed: its number may already name a new connection)
            self.poll.unregister(fd)
        for fd, conn in wanted.items():
            if fd not in self.conns:
                self.conns[fd] = conn
                self.poll.register(fd, select.POLLIN)
        # As wait(): any event (a hang-up, an error) makes a connection ready, so that its read fails.
        events = self.poll.poll(None if timeout is None else math.ceil(max(0.0, timeout) * 1000))
        return [self.conns[fd] for fd, _ in events]
