"""The database broker's SQLite settings: a busy timeout and WAL for every connection, and claims that skip the fsync.

The cluster writes from many processes at once (claims, acks, results). A
busy timeout makes each writer wait its turn instead of failing with
"database is locked"; WAL lets readers go on while one of them writes.

In WAL mode a claim made outside a transaction commits at `synchronous =
NORMAL`: it waits for no fsync, and survives a crash of any process; only a
crash of the OS or a power loss soon after can undo it, and its task may then
run twice. Enqueues, acks and results commit as the connection is set.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, cast

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import receiver

if TYPE_CHECKING:
    from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper

# Long enough to outwait any other writer of the cluster: each of them holds
# the write lock for one short statement.
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_NORMAL = 1  # PRAGMA synchronous: in WAL mode, a commit waits for no fsync


@contextmanager
def unsynced(conn: BaseDatabaseWrapper, cursor: Any) -> Iterator[None]:
    """On SQLite in WAL mode, outside a transaction: commit the statements inside at `synchronous = NORMAL`,
    then restore the setting. Elsewhere, nothing."""
    if conn.vendor != "sqlite" or conn.in_atomic_block:
        yield
        return
    cursor.execute("PRAGMA journal_mode")
    wal = cursor.fetchone()[0].lower() == "wal"
    cursor.execute("PRAGMA synchronous")
    (level,) = cursor.fetchone()
    if not wal or level <= SQLITE_NORMAL:
        yield
        return
    cursor.execute(f"PRAGMA synchronous = {SQLITE_NORMAL}")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA synchronous = {int(level)}")


# The raw connection each wrapper was prepared with: a reconnect brings a new
# raw connection, which needs preparing again.
_prepared: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Any] = weakref.WeakKeyDictionary()


def prepare(conn: BaseDatabaseWrapper) -> None:
    """Make an open SQLite connection wait for the write lock, and put file databases in WAL mode.

    Idempotent; a timeout the project set higher is kept.
    """
    raw = conn.connection
    if raw is None or _prepared.get(conn) is raw:
        return
    (current,) = raw.execute("PRAGMA busy_timeout").fetchone()
    if current < SQLITE_BUSY_TIMEOUT_MS:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    if not cast("SQLiteWrapper", conn).is_in_memory_db() and not raw.in_transaction:
        # WAL is a speed-up, not a need (a read-only directory refuses it).
        with suppress(sqlite3.Error):
            if raw.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                raw.execute("PRAGMA journal_mode = WAL")
    _prepared[conn] = raw


@receiver(connection_created, dispatch_uid="django_q.brokers.orm_sqlite.prepare")
def _prepare_new_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # Every SQLite connection of a process that uses this broker, not only the
    # broker's own: workers save results to the same file.
    if connection.vendor == "sqlite":
        prepare(connection)
