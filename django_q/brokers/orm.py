"""The database broker: one OrmQ row per package, claimed atomically so no row goes out twice.

A row's `visible` (epoch seconds) says when it may be handed out: now for a new
row, the due time for a delayed one, the end of the lease for a leased one. So
one condition, `visible <= now`, finds both new rows and rows whose lease
lapsed, and a claim is "move `visible` to the end of a new lease".

Claims, by database:

- PostgreSQL: one `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
  RETURNING`; concurrent claimers skip each other's rows instead of waiting.
  A claim made outside a transaction commits with `synchronous_commit` off:
  it returns without waiting for its WAL to reach the disk (an fsync, about
  1 ms here, most of the time a lone task waits). Only a crash of the
  PostgreSQL server within a moment of the claim (at most three times
  `wal_writer_delay`, 0.6 s by default) can undo it: the row is then ready
  again, and its task may run twice, as after the death of its cluster.
  Enqueues, acks and results commit as the database is configured.
- SQLite: the same statement without the lock clause. A write statement takes
  the database's write lock before it reads, so the select and the update are
  one atomic step; run in autocommit, it never upgrades a read transaction to a
  write one (which fails at once with "database is locked", whatever the busy
  timeout). A claim skips the fsync too, in WAL mode (orm_sqlite.py).
- MySQL/MariaDB and others: `SELECT ... FOR UPDATE SKIP LOCKED` then `UPDATE`
  in one transaction (MariaDB cannot `UPDATE ... RETURNING`).

An idle waiting dequeue is woken by a NOTIFY (PostgreSQL) or a change of
`PRAGMA data_version` (SQLite) soon after a row is committed, and still claims
every `poll` seconds for rows that become ready on their own; see wakeup.py.

Time is this host's `time.time()`: clusters sharing a database must keep their
clocks in step (NTP) for leases and delays to hold.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from django.db import DatabaseError, Error, IntegrityError, InterfaceError, OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.utils import timezone

from ..exceptions import BrokerConnectionError, BrokerError
from ..models import Heartbeat, OrmQ, QueueHistory
from ..rates import Limit
from . import orm_rates, orm_sqlite, wakeup
from .base import (
    HISTORY_MINUTES,
    REMOVED,
    REQUESTED,
    Cancelled,
    Delivery,
    Pending,
    QueueBackend,
    ReadyWatch,
    batch_keys,
    check_priority,
    check_unique,
    visible_pending,
)
from .orm_owners import OrmOwners

# Rows per INSERT of enqueue_many, so that big packages stay under MySQL's
# max_allowed_packet.
BULK_BATCH = 100
# Inserts of a unique row tried while its holder keeps being acked between our
# insert and our read of it.
UNIQUE_TRIES = 5

Row = tuple[int, bytes, int, int]  # id, payload, attempts, priority

# The columns enqueue() writes (the others are NULL), in the order of its values.
INSERTED = ("queue", "payload", "priority", "visible", "leased", "attempts", "created", "key", "cancel")
_CREATED = OrmQ._meta.get_field("created")
_PAYLOAD = OrmQ._meta.get_field("payload")
_inserts: dict[tuple[str, bool], str] = {}  # (vendor, notify) -> the INSERT of enqueue()


class OrmBroker(OrmOwners, QueueBackend):
    """A queue in the OrmQ table of database `alias`, polled every `poll` seconds while empty."""

    def __init__(self, name: str, lease: float, alias: str = "default", poll: float = 0.2) -> None:
        super().__init__(name, lease)
        self.alias = alias
        self.poll = poll
        self._waiter: wakeup.Waiter | None = None  # made by the first waiting dequeue
        self._channel = wakeup.channel(name)

    def enqueue(self, payload: bytes, priority: int = 0, delay: float = 0.0, key: str | None = None) -> str:
        """Add a package; higher `priority` is handed out first; `delay` seconds hold it back.

        One INSERT written here rather than by a model's save(), whose
        machinery cost more than the statement itself; on PostgreSQL the
        statement also sends the NOTIFY of a ready row (wakeup.py).
        """
        check_priority(priority)
        notify = delay <= 0  # a ready row: PostgreSQL's listeners hear of it
        with self._db() as conn:
            values = [self.name, _PAYLOAD.get_db_prep_save(payload, conn), priority, time.time() + max(delay, 0.0),
                      False, 0, _CREATED.get_db_prep_save(timezone.now(), conn), key, False]
            pg = conn.vendor == "postgresql"
            with conn.cursor() as cursor:
                cursor.execute(_insert_sql(conn, notify), [*values, self._channel] if pg and notify else values)
                if pg:
                    return str(cursor.fetchone()[0])
                return str(conn.ops.last_insert_id(cursor, OrmQ._meta.db_table, "id"))

    def enqueue_unique(self, payload: bytes, unique: str, key: str, priority: int = 0, delay: float = 0.0) -> str:
        """Insert the row unless another row of the queue holds `unique`; the key of the row that holds it.

        The unique constraint on (queue, unique_key) decides between producers:
        a concurrent insert of the same key waits for the first to commit, then
        fails. The holder may be acked between that failure and reading it, so
        the insert is tried again.
        """
        check_priority(priority)
        check_unique(unique)
        for _ in range(UNIQUE_TRIES):
            with self._db() as conn:
                try:
                    with transaction.atomic(using=self.alias):  # a savepoint inside the caller's transaction
                        OrmQ.objects.using(self.alias).create(
                            queue=self.name, payload=payload, priority=priority,
                            visible=time.time() + max(delay, 0.0), key=key, unique_key=unique,
                        )
                except IntegrityError:
                    holder = self._rows().filter(unique_key=unique).values_list("key", flat=True).first()
                    if holder is not None:
                        return holder
                    continue
                if delay <= 0:
                    wakeup.notify(conn, self.name)
                return key
        raise BrokerError(f"unique key {unique} of queue {self.name!r} kept changing hands; nothing was enqueued")

    def enqueue_many(
        self, payloads: Sequence[bytes], priority: int = 0, delay: float = 0.0, keys: Sequence[str | None] = ()
    ) -> list[str]:
        """Add several packages with multi-row INSERTs."""
        check_priority(priority)
        visible = time.time() + max(delay, 0.0)
        rows = [
            OrmQ(queue=self.name, payload=p, priority=priority, visible=visible, key=k)
            for p, k in zip(payloads, batch_keys(payloads, keys))
        ]
        with self._db() as conn:
            if conn.features.can_return_rows_from_bulk_insert:
                OrmQ.objects.using(self.alias).bulk_create(rows, batch_size=BULK_BATCH)
            else:
                # Without RETURNING a bulk insert cannot tell us the ids.
                with transaction.atomic(using=self.alias):
                    for row in rows:
                        row.save(using=self.alias, force_insert=True)
            if delay <= 0 and rows:
                wakeup.notify(conn, self.name)
        return [str(row.pk) for row in rows]

    def dequeue(self, count: int = 1, timeout: float = 0.0, owner: str | None = None) -> list[Delivery]:
        """Lease up to `count` ready packages, waiting up to `timeout` seconds for the first.

        While nothing is ready it claims again every `poll` seconds, or as soon
        as the waiter sees a commit that may have added a row.
        """
        if count < 1:
            return []
        deadline = time.monotonic() + timeout
        while True:
            with self._db() as conn:
                waiter = self._waiter_for(conn) if timeout > 0 else None
                if waiter is not None:
                    conn.ensure_connection()
                    waiter.arm(conn)  # before the claim: a commit racing the claim still wakes the wait
                rows = self._claim(conn, count, owner)
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0 or waiter is None:
                break
            with self._db() as conn:
                waiter.wait(conn, min(self.poll, remaining))
        # RETURNING gives rows in no particular order.
        rows.sort(key=lambda row: (-row[3], row[0]))
        return [Delivery(id=str(pk), payload=bytes(payload), attempts=attempts) for pk, payload, attempts, _ in rows]

    def renew(self, ids: Sequence[str]) -> None:
        """Extend the leases of `ids` to `lease` seconds from now."""
        with self._db():
            self._leased_rows(ids).update(visible=time.time() + self.lease)

    def ack(self, ids: Sequence[str]) -> None:
        """Delete the rows of leased deliveries."""
        with self._db():
            self._leased_rows(ids).delete()

    def requeue(self, ids: Sequence[str]) -> None:
        """Make leased deliveries ready now; rows keep their id, so they keep their place."""
        with self._db() as conn:
            if self._leased_rows(ids).update(leased=False, visible=time.time(), running=None):
                wakeup.notify(conn, self.name)

    def retry(self, delivery_id: str, payload: bytes, delay: float) -> None:
        """Put the new package in the leased row and make it ready after `delay` seconds."""
        with self._db() as conn:
            updated = self._leased_rows([delivery_id]).update(
                payload=payload, leased=False, visible=time.time() + max(delay, 0.0), running=None
            )
            if updated and delay <= 0:
                wakeup.notify(conn, self.name)

    def defer(self, delays: Mapping[str, float]) -> None:
        """Make leased rows ready after their delays, taking back the attempt of their dequeue (one transaction)."""
        now = time.time()
        with self._db(), transaction.atomic(using=self.alias):
            for delivery_id, delay in delays.items():
                self._leased_rows([delivery_id]).update(
                    leased=False, visible=now + max(delay, 0.0), running=None, owner=None, attempts=F("attempts") - 1
                )

    def take_starts(self, wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]) -> list[float]:
        """Take starts from the RateLog rows of the queue, under their locks (see orm_rates)."""
        with self._db():
            return orm_rates.take_starts(self.alias, self.name, wanted, limits)

    def mark_running(self, running: dict[str, bytes]) -> None:
        """Store each delivery's running record in its row, in one UPDATE: no transaction holds SQLite's
        write lock across the Python between statements (a process paused there would stop every writer)."""
        field = OrmQ._meta.get_field("running")
        cases = [When(pk=int(k), then=Value(v, output_field=field)) for k, v in running.items()
                 if k.isascii() and k.isdigit()]
        if cases:
            with self._db():
                self._leased_rows(list(running)).update(running=Case(*cases, output_field=field))

    def lookup(self, key: str) -> Pending | None:
        """The newest row enqueued under `key`."""
        with self._db():
            row = self._rows().filter(key=key).order_by("-id").first()
        return None if row is None else _pending(row, time.time())

    def pending(self, limit: int = 100) -> list[Pending]:
        """Leased rows, then ready ones in the order they go out, then delayed ones by due time."""
        now = time.time()
        rows = self._rows()
        with self._db():
            found = list(rows.filter(leased=True, visible__gt=now).order_by("id")[:limit])
            found += rows.filter(visible__lte=now).order_by("-priority", "id")[: limit - len(found)]
            found += rows.filter(leased=False, visible__gt=now).order_by("visible", "id")[: limit - len(found)]
        return [_pending(row, now) for row in found[:limit]]

    def cancel(self, key: str) -> Cancelled | None:
        """Delete the row of `key` unless it is leased; a leased row gets its cancel flag.

        Two single statements rather than a transaction, so that SQLite never
        upgrades a read lock: whichever of them finds the row decides.
        """
        with self._db():
            row = self._rows().filter(key=key).order_by("-id").first()
            if row is None:
                return None
            now = time.time()
            pending = _pending(row, now)
            live_lease = Q(leased=True, visible__gt=now)
            if self._rows().filter(pk=row.pk).exclude(live_lease).delete()[0]:
                return Cancelled(REMOVED, pending)
            if self._rows().filter(live_lease, pk=row.pk).update(cancel=True):
                return Cancelled(REQUESTED, pending)
        return None  # acked meanwhile

    def cancel_requests(self, ids: Sequence[str]) -> list[str]:
        """Those of `ids` whose rows carry the cancel flag."""
        if not ids:
            return []
        with self._db():
            return [str(pk) for pk in self._leased_rows(ids).filter(cancel=True).values_list("id", flat=True)]

    def size(self) -> int:
        """Rows that the next dequeue may hand out: new, requeued, due or with a lapsed lease."""
        with self._db():
            return self._rows().filter(visible__lte=time.time()).count()

    def leased(self) -> int:
        """Rows handed out whose lease has not lapsed."""
        with self._db():
            return self._rows().filter(leased=True, visible__gt=time.time()).count()

    def ping(self) -> None:
        """Run `SELECT 1`; raise BrokerConnectionError if the database does not answer."""
        with self._db() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1")

    def purge(self) -> None:
        """Delete every row of this queue, ready, delayed or leased, and its rate logs."""
        with self._db():
            self._rows().delete()
            orm_rates.purge(self.alias, self.name)

    def publish_status(self, cluster_id: str, data: bytes, ttl: float) -> None:
        """Store the status row of `cluster_id`, and delete the expired rows of the queue."""
        now = time.time()
        rows = Heartbeat.objects.using(self.alias).filter(queue=self.name)
        with self._db():
            rows.filter(expires__lte=now).delete()
            # One publisher per cluster id: an update that finds no row cannot race a create.
            if not rows.filter(cluster_id=cluster_id).update(data=data, expires=now + ttl):
                Heartbeat.objects.using(self.alias).create(
                    queue=self.name, cluster_id=cluster_id, data=data, expires=now + ttl
                )

    def remove_status(self, cluster_id: str) -> None:
        """Delete the status row of `cluster_id`."""
        with self._db():
            Heartbeat.objects.using(self.alias).filter(queue=self.name, cluster_id=cluster_id).delete()

    def statuses(self) -> list[bytes]:
        """The status rows of the queue that have not expired."""
        with self._db():
            rows = Heartbeat.objects.using(self.alias).filter(queue=self.name, expires__gt=time.time())
            return [bytes(data) for data in rows.values_list("data", flat=True)]

    def write_history(self, minute: int, writer: str, data: bytes) -> None:
        """Store `writer`'s row of `minute`, and delete the queue's rows past HISTORY_MINUTES."""
        rows = QueueHistory.objects.using(self.alias).filter(queue=self.name)
        with self._db():
            rows.filter(minute__lte=int(time.time() // 60) - HISTORY_MINUTES).delete()
            # One writer per (minute, writer): an update that finds no row cannot race a create.
            if not rows.filter(minute=minute, writer=writer).update(data=data):
                QueueHistory.objects.using(self.alias).create(queue=self.name, minute=minute, writer=writer, data=data)

    def read_history(self, since: int) -> list[tuple[int, bytes]]:
        """Every row of the minutes from `since` on (and within HISTORY_MINUTES)."""
        since = max(since, int(time.time() // 60) - HISTORY_MINUTES + 1)
        with self._db():
            rows = QueueHistory.objects.using(self.alias).filter(queue=self.name, minute__gte=since)
            return [(minute, bytes(data)) for minute, data in rows.values_list("minute", "data")]

    def watch(self, brokers: Sequence[Any]) -> ReadyWatch:
        """A waiter of wakeup.py for every queue of `brokers` (queues of this database) at once."""
        return wakeup.QueuesWatch(self._db, [b.name for b in brokers], self.poll)

    def close(self) -> None:
        """Close the waiter's connection, and this thread's connection to `alias` unless a transaction is open on it."""
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        conn = connections[self.alias]
        if not conn.in_atomic_block:
            with suppress(Error):
                conn.close()

    def _waiter_for(self, conn: BaseDatabaseWrapper) -> wakeup.Waiter:
        if self._waiter is None:
            self._waiter = wakeup.waiter_for(conn, [self.name])
        return self._waiter

    def _rows(self) -> QuerySet:
        return OrmQ.objects.using(self.alias).filter(queue=self.name)

    def _leased_rows(self, ids: Sequence[str]) -> QuerySet:
        # An id that is not a row id cannot be leased: it matches nothing.
        pks = [int(s) for s in map(str, ids) if s.isascii() and s.isdigit()]
        return self._rows().filter(pk__in=pks, leased=True)

    def _claim(self, conn: BaseDatabaseWrapper, count: int, owner: str | None) -> list[Row]:
        # A claimed row may be a lapsed lease: its running record was the dead cluster's, so it goes.
        now = time.time()
        if conn.vendor in ("postgresql", "sqlite"):
            return self._claim_returning(conn, count, now, owner)
        return self._claim_locking(conn, count, now, owner)

    def _claim_returning(self, conn: BaseDatabaseWrapper, count: int, now: float, owner: str | None) -> list[Row]:
        if conn.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
            raise BrokerError(f"the database broker needs SQLite 3.35 or newer, not {sqlite3.sqlite_version}")
        table = conn.ops.quote_name(OrmQ._meta.db_table)
        lock = " FOR UPDATE SKIP LOCKED" if conn.vendor == "postgresql" else ""
        # PostgreSQL: the claim's commit does not wait for the disk (module
        # docstring). Set for this statement's transaction only, and evaluated
        # only for a claimed row, the one case that writes a commit record.
        quick = ", set_config('synchronous_commit', 'off', true)" if lock and not conn.in_atomic_block else ""
        sql = (
            f"UPDATE {table} SET visible = %s, leased = %s, attempts = attempts + 1, running = NULL, owner = %s "
            f"WHERE id IN (SELECT id FROM {table} WHERE queue = %s AND visible <= %s "
            f"ORDER BY priority DESC, id LIMIT %s{lock}) "
            f"RETURNING id, payload, attempts, priority{quick}"
        )
        with conn.cursor() as cursor, orm_sqlite.unsynced(conn, cursor):
            cursor.execute(sql, [now + self.lease, True, owner, self.name, now, count])
            return [row[:4] for row in cursor.fetchall()]

    def _claim_locking(self, conn: BaseDatabaseWrapper, count: int, now: float, owner: str | None) -> list[Row]:
        skip = conn.features.has_select_for_update_skip_locked
        with transaction.atomic(using=self.alias):
            ready = self._rows().filter(visible__lte=now).order_by("-priority", "id")
            rows = list(
                ready.select_for_update(skip_locked=skip).values_list("id", "payload", "attempts", "priority")[:count]
            )
            if rows:
                OrmQ.objects.using(self.alias).filter(pk__in=[row[0] for row in rows]).update(
                    visible=now + self.lease, leased=True, attempts=F("attempts") + 1, running=None, owner=owner
                )
        return [(pk, payload, attempts + 1, priority) for pk, payload, attempts, priority in rows]

    @contextmanager
    def _db(self) -> Iterator[BaseDatabaseWrapper]:
        """This thread's connection to `alias`, with database errors turned into broker errors."""
        conn = connections[self.alias]
        try:
            if conn.vendor == "sqlite":
                conn.ensure_connection()
                orm_sqlite.prepare(conn)
            yield conn
        except (OperationalError, InterfaceError) as exc:
            # The connection may be broken for good: drop it, so that the next
            # call reconnects. Closing a dead connection may raise in turn.
            if not conn.in_atomic_block:
                with suppress(Error):
                    conn.close()
            raise BrokerConnectionError(f"database {self.alias!r}: {exc}") from exc
        except DatabaseError as exc:
            raise BrokerError(f"database {self.alias!r}: {exc}") from exc


def _insert_sql(conn: BaseDatabaseWrapper, notify: bool) -> str:
    """The INSERT of one row of INSERTED. On PostgreSQL it returns the id, and with `notify` it also sends
    pg_notify(%s) in the same statement: one round trip, and no notice for a row that is rolled back."""
    pg = conn.vendor == "postgresql"
    sql = _inserts.get((conn.vendor, pg and notify))
    if sql is None:
        quote = conn.ops.quote_name
        sql = (f"INSERT INTO {quote(OrmQ._meta.db_table)} ({', '.join(map(quote, INSERTED))}) "
               f"VALUES ({', '.join(['%s'] * len(INSERTED))})")
        if pg:
            sql += " RETURNING id"
            if notify:
                sql = f"WITH new AS ({sql}) SELECT id, pg_notify(%s, '') FROM new"
        _inserts[conn.vendor, pg and notify] = sql
    return sql


def _pending(row: OrmQ, now: float) -> Pending:
    running = None if row.running is None else bytes(row.running)
    return visible_pending(str(row.pk), row.leased, row.visible, now, bytes(row.payload), row.attempts, running)
