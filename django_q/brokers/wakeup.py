"""How an idle database broker learns, sooner than its next poll, that its queue may have new rows.

A waiting `OrmBroker.dequeue` repeats: `arm`, claim, and if the claim found
nothing, `wait` up to `poll` seconds. `wait` returns early when a row may have
been committed since `arm`; arming before the claim is what makes a commit
that races the claim wake the next `wait` instead of being missed. A wake that
finds nothing costs one claim; a missed wake costs at most `poll` seconds,
never a task, because the periodic claim still finds every ready row (delayed
rows falling due and lapsed leases are found only that way: nobody commits
when they become ready).

- PostgreSQL: `LISTEN` on a channel per queue (on each queue's channel, for a
  cluster serving several), on a connection of its own
  (opened by the first waiting dequeue, closed by `close`). An enqueue
  sends `pg_notify` in the statement of its INSERT (orm.py: one round
  trip), a batch right after its INSERTs, so the notice arrives once the
  row is visible, and never for a rolled-back row.
- SQLite: `PRAGMA data_version` on the broker's connection changes when any
  other connection commits to the file. On Linux the wait sleeps until
  inotify reports a write to the file or its WAL (inotify.py), then reads the
  counter; elsewhere it reads it every `SQLITE_CHECK` seconds (it costs
  microseconds). In-memory databases poll.
- MySQL/MariaDB and others poll: they have no notification, and asking
  whether a table changed takes a query about as costly as the claim itself
  (an index range read on the queue's ready rows).
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

from django.db.backends.base.base import BaseDatabaseWrapper

from . import inotify
from .base import ReadyWatch

if TYPE_CHECKING:
    from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper

logger = logging.getLogger("django_q")

# Seconds between two reads of PRAGMA data_version while idle without inotify:
# adds about half of it to an idle cluster's pick-up latency. At 0.01 an idle
# cluster uses about 1.5 % of one core more than plain polling
# (bench/idle_cpu.py: mostly the wakeup itself; a read of the pragma costs ~5 us
# warm, ~100 us after a sleep). With inotify: inotify reports a commit's write,
# which comes before its fsync (0.3-1 ms here, far longer under load) and before
# the commit is published, and nothing once it is. So after a write the counter
# is read every SQLITE_SETTLE seconds for SQLITE_CHECK, then at least every
# SQLITE_CHECK until it changes or the wait ends: a slow commit is seen late,
# never missed, and the next write starts the quick reads again.
SQLITE_CHECK = 0.01
SQLITE_SETTLE = 0.0002
# Seconds to wait before opening a LISTEN connection again after one failed.
LISTEN_RETRY = 30.0

_warned: set[str] = set()  # aliases whose LISTEN failure was logged


def channel(queue: str) -> str:
    """The NOTIFY channel of `queue`: a lower-case identifier well under PostgreSQL's 63 bytes."""
    return "django_q_" + hashlib.sha256(queue.encode()).hexdigest()[:32]


def notify(conn: BaseDatabaseWrapper, queue: str) -> None:
    """Tell the listeners of `queue` that it has new ready rows, when the current transaction commits."""
    if conn.vendor == "postgresql":
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [channel(queue)])


class Waiter:
    """Plain polling: `wait` sleeps the whole time."""

    def arm(self, conn: BaseDatabaseWrapper) -> None:
        """Note the state of the database; call right before a claim, on an open connection."""

    def wait(self, conn: BaseDatabaseWrapper, seconds: float) -> None:
        """Return after `seconds`, or sooner if a row may have been committed since `arm`."""
        time.sleep(seconds)

    def close(self) -> None:
        """Release what the waiter holds."""


def waiter_for(conn: BaseDatabaseWrapper, queues: Sequence[str]) -> Waiter:
    """The best waiter for new rows of any of `queues` in the database of `conn`."""
    if conn.vendor == "postgresql":
        return PgListener(queues)
    if conn.vendor == "sqlite" and not cast("SQLiteWrapper", conn).is_in_memory_db():
        return DataVersionWatch()
    return Waiter()


class QueuesWatch(ReadyWatch):
    """The best waiter for several queues, for brokers.queues: `db()` gives the connection (the broker's
    error translation around it), and a wait lasts at most `poll` seconds."""

    def __init__(self, db: Callable[[], AbstractContextManager[BaseDatabaseWrapper]], queues: list[str],
                 poll: float) -> None:
        self.db = db
        self.queues = queues
        self.poll = poll
        self.waiter: Waiter | None = None

    def arm(self) -> None:
        with self.db() as conn:
            if self.waiter is None:
                self.waiter = waiter_for(conn, self.queues)
            conn.ensure_connection()
            self.waiter.arm(conn)

    def wait(self, seconds: float) -> None:
        assert self.waiter is not None, "arm() first"
        with self.db() as conn:
            self.waiter.wait(conn, min(self.poll, seconds))

    def close(self) -> None:
        if self.waiter is not None:
            self.waiter.close()
            self.waiter = None


class DataVersionWatch(Waiter):
    """Wakes when another SQLite connection committed to the file: told by inotify where it can, else by
    reading the counter every SQLITE_CHECK seconds."""

    def __init__(self) -> None:
        self._raw: Any = None
        self._version: int | None = None
        self._files: inotify.FolderWrites | None = None
        self._watched = False  # a watch was tried (made or not) in this process

    def arm(self, conn: BaseDatabaseWrapper) -> None:
        if self._files is not None and self._files.pid != os.getpid():
            self._files, self._watched = None, False  # inherited through fork
        if not self._watched:
            self._watched = True
            self._files = _watch_file(str(conn.settings_dict["NAME"]))  # before the counter: no commit slips by
        self._raw = conn.connection
        self._version = _data_version(self._raw)

    def wait(self, conn: BaseDatabaseWrapper, seconds: float) -> None:
        end = time.monotonic() + seconds
        written: float | None = None  # when inotify reported a write (monotonic seconds)
        while (left := end - time.monotonic()) > 0:
            settling = written is not None and time.monotonic() - written < SQLITE_CHECK
            if settling or self._files is None:
                time.sleep(min(SQLITE_SETTLE if settling else SQLITE_CHECK, left))
            # Past the settle reads a write may still be unpublished (or was this
            # connection's own, which never moves its counter): read the counter
            # every SQLITE_CHECK, and settle again at once on the next write.
            elif self._files.wait(left if written is None else min(left, SQLITE_CHECK)):
                written = time.monotonic()
            # A new raw connection (a reconnect) has its own counter: wake to re-arm.
            if conn.connection is not self._raw or _data_version(self._raw) != self._version:
                return

    def close(self) -> None:
        files, self._files, self._watched = self._files, None, False
        if files is not None:
            files.close()


def _watch_file(name: str) -> inotify.FolderWrites | None:
    """Writes to the SQLite file `name` and to its WAL, or None (a URI name; no inotify)."""
    if name.startswith("file:"):
        return None
    path = os.path.abspath(name)
    base = os.path.basename(path)
    return inotify.watch(os.path.dirname(path), [base, base + "-wal"])


def _data_version(raw: sqlite3.Connection) -> int | None:
    # None on error: then the counter never differs and the wait polls.
    try:
        return raw.execute("PRAGMA data_version").fetchone()[0]
    except sqlite3.Error:
        return None


class PgListener(Waiter):
    """Wakes on a NOTIFY of any of the queues' channels, received on a connection of its own."""

    def __init__(self, queues: Sequence[str]) -> None:
        self.channels = [channel(queue) for queue in queues]
        self._raw: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._pid = 0
        self._retry_at = 0.0

    def arm(self, conn: BaseDatabaseWrapper) -> None:
        if self._raw is not None and self._pid != os.getpid():
            self._raw = None  # inherited through fork: the parent's session, not ours to close
        if self._raw is None:
            if time.monotonic() >= self._retry_at:
                self._listen(conn)
            return
        try:
            _drain(self._raw)  # notices from before the claim: the claim sees their rows
        except self._errors as exc:
            self._failed(conn.alias, exc)

    def wait(self, conn: BaseDatabaseWrapper, seconds: float) -> None:
        if self._raw is None:
            time.sleep(seconds)
            return
        start = time.monotonic()
        try:
            _wait_one(self._raw, seconds)
        except self._errors as exc:
            self._failed(conn.alias, exc)
            time.sleep(max(0.0, seconds - (time.monotonic() - start)))

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None and self._pid == os.getpid():
            try:
                raw.close()
            except self._errors:
                pass

    def _listen(self, conn: BaseDatabaseWrapper) -> None:
        database = conn.Database  # type: ignore[attr-defined]  # every backend has it; the stubs leave it out
        self._errors = (database.Error, OSError)
        try:
            raw = database.connect(**conn.get_connection_params())
        except self._errors as exc:
            self._failed(conn.alias, exc)
            return
        self._raw, self._pid = raw, os.getpid()
        try:
            raw.autocommit = True
            with raw.cursor() as cursor:
                for name in self.channels:
                    cursor.execute(f'LISTEN "{name}"')
        except self._errors as exc:
            self._failed(conn.alias, exc)

    def _failed(self, alias: str, exc: BaseException) -> None:
        self.close()
        self._retry_at = time.monotonic() + LISTEN_RETRY
        if alias not in _warned:
            _warned.add(alias)
            logger.warning("database %r: LISTEN failed, the broker polls instead: %s", alias, exc)
        else:
            logger.debug("database %r: LISTEN failed again: %s", alias, exc)


def _drain(raw: Any) -> None:
    """Consume the notices received so far, without blocking."""
    if callable(raw.notifies):  # psycopg 3
        for _ in raw.notifies(timeout=0):
            pass
    else:  # psycopg2
        raw.poll()
        del raw.notifies[:]


def _wait_one(raw: Any, seconds: float) -> None:
    """Block until a notice arrives or `seconds` pass; leave the notices for the next `arm` to drain."""
    if callable(raw.notifies):  # psycopg 3
        for _ in raw.notifies(timeout=seconds, stop_after=1):
            pass
        return
    raw.poll()
    if not raw.notifies:
        select.select([raw], [], [], seconds)
        raw.poll()
