"""The monitor: saves results in batches, prunes, calls hooks, continues chains; runs the scheduler.

It gets outcomes from the pusher and answers each batch with `Saved`, after
the rows are committed; only then does the pusher ack the broker. A batch that
meets a database outage is kept and saved again until it goes through.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django import db
from django.db import DatabaseError, IntegrityError, models, router, transaction

from .. import signals
from ..conf import Config
from ..models import DeadLetter, Success, Task
from ..package import TaskPackage
from ..rows import epoch_datetime, row_fields
from . import process
from .messages import STOP, DeadLetterNote, Exit, Hello, Outcome, Role, Saved, send

logger = logging.getLogger("django_q")

BATCH = 500  # most messages saved in one transaction
# Seconds a batch waits for more results once the first arrived: fewer commits,
# and under load whole batches of successes beyond save_limit never written
# (Recorder._unpruned). It doubles after a big batch and halves after a small one.
LINGER_MIN = 0.01
LINGER_MAX = 0.1
BIG_BATCH = 50
PRUNE_EVERY = 0.5  # seconds between prunes while results keep coming


INSERT_CHUNK = 500  # rows per executemany


def _concrete_fields() -> list:
    return [f for f in Task._meta.concrete_fields]


# Text, whole numbers and booleans need no preparing when they already are of
# their field's type: get_db_prep_save hands them over unchanged on every backend.
_PLAIN_FIELDS = (models.CharField, models.IntegerField, models.BooleanField)
_PLAIN_VALUES = (str, int, bool, type(None))


def _preparer(field: Any, connection: Any) -> Callable[[Any], Any]:
    """What makes a value of `field` ready for an INSERT on `connection`, as get_db_prep_save would."""
    def prepare(value: Any) -> Any:
        return field.get_db_prep_save(value, connection)

    if type(field).get_db_prep_save is not models.Field.get_db_prep_save:
        return prepare
    if isinstance(field, _PLAIN_FIELDS):
        return lambda value: value if type(value) in _PLAIN_VALUES else prepare(value)
    if type(field) is models.DateTimeField:
        # rows.epoch_datetime's datetimes already are what DateTimeField.get_prep_value would
        # make of them (aware with USE_TZ, naive without): only the backend's
        # adaptation is left.
        adapt = connection.ops.adapt_datetimefield_value
        return lambda value: adapt(value) if type(value) is datetime else prepare(value)
    return prepare


def _insert_sql(connection: Any) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in _concrete_fields())
    marks = ", ".join(["%s"] * len(_concrete_fields()))
    return f"INSERT INTO {quote(Task._meta.db_table)} ({columns}) VALUES ({marks})"


class Recorder:
    """Turns outcomes into Task rows and runs what follows a finished task."""

    def __init__(self, config: Config, sync: bool = False) -> None:
        self.config = config
        self.sync = sync  # continue chains in this process rather than through the broker
        self.prune_pending = False
        self.pruned_at = 0.0  # monotonic time of the last prune
        self.alias = router.db_for_write(Task)

    def record(self, outcomes: Sequence[Outcome], dead: Sequence[DeadLetterNote] = ()) -> Saved:
        """Save a batch in one transaction, then run hooks, chains and iter folding for new results."""
        repeats = self._folded_parts(outcomes)
        live = [o for o in outcomes if o not in repeats] if repeats else outcomes
        stored = self._unpruned([o for o in live if self._keeps(o)])
        latest = {o.task.id: o for o in stored}  # a batch may hold one task twice
        # Read before the transaction, so that on SQLite it opens with a write and
        # waits for the lock instead of failing to upgrade a read lock.
        existing = self._existing(list(latest))
        with transaction.atomic(using=self.alias):
            if dead:
                DeadLetter.objects.using(self.alias).bulk_create(
                    [DeadLetter(broker_id=d.delivery_id, queue=d.queue, payload=d.payload, reason=d.reason) for d in dead]
                )
            fresh = self._store(latest, existing)
        if self.config.save_limit > 0 and any(o.success for o in stored):
            self.prune_pending = True
        try:
            self.prune_if_due()
        except DatabaseError as exc:  # the batch is saved; its hooks must still run
            logger.warning("pruning results failed, will retry: %s", exc)
        # A Task instance is built only for a hook or a post_execute receiver to
        # see: the no-hook, no-chain case costs nothing past the INSERT.
        listening = signals.post_execute.has_listeners("django_q")  # receivers of every sender, or of ours
        for outcome in live:
            task = outcome.task
            if task.id in latest and task.id not in fresh:
                continue  # a repeat of a result saved before: its hook and chain ran then
            if task.hook or task.parent or task.chain or listening:
                row = self._row(outcome)
                if task.id in fresh:  # as if loaded from the database
                    row._state.adding, row._state.db = False, self.alias
                self._after(outcome, row)
        return Saved(
            ack_ids=tuple(o.delivery_id for o in outcomes if o.ack) + tuple(d.delivery_id for d in dead),
            release_ids=tuple(o.delivery_id for o in outcomes if not o.ack),
        )

    def _folded_parts(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """async_iter parts delivered again after their parent was folded: acked, not stored."""
        parents = {o.task.parent for o in outcomes if o.task.parent}
        if not parents:
            return []
        folded = set(Task.objects.using(self.alias).filter(id__in=parents).values_list("id", flat=True))
        return [o for o in outcomes if o.task.parent in folded]

    def _unpruned(self, stored: list[Outcome]) -> list[Outcome]:
        """Leave out the successes that the prune after this batch would delete at once.

        With save_limit n, only the n newest successes survive a batch of more
        than n; the older ones are never written (their hooks still run). Only
        first deliveries are left out: a redelivered success may have to
        replace a stored failure.
        """
        keep = self.config.save_limit
        if keep <= 0:
            return stored
        prunable = [o for o in stored if o.success and not o.task.parent and o.attempts == 1]
        excess = len(prunable) - keep
        if excess <= 0:
            return stored
        dropped = {id(o) for o in sorted(prunable, key=lambda o: o.stopped)[:excess]}
        return [o for o in stored if id(o) not in dropped]

    def _keeps(self, outcome: Outcome) -> bool:
        if not outcome.success or outcome.task.parent:
            return True  # failures are always kept; iter parts until they are folded
        if outcome.task.save is not None:
            return outcome.task.save
        return self.config.save_limit != -1

    def _row(self, outcome: Outcome) -> Task:
        return Task(**self._fields(outcome))

    def _fields(self, outcome: Outcome) -> dict[str, Any]:
        """The Task row of an outcome, field by field."""
        return dict(
            row_fields(outcome.task),
            result=outcome.result,
            cluster=outcome.cluster,
            started=epoch_datetime(outcome.started),
            stopped=epoch_datetime(outcome.stopped),
            success=outcome.success,
            attempt_count=outcome.attempts,
            status=outcome.status,
            worker=outcome.worker,
            exception=outcome.exception,
        )

    def _store(self, latest: dict[str, Outcome], existing: dict[str, bool]) -> set[str]:
        """Insert new rows; a success replaces a stored failure, nothing replaces a success.
        Returns the ids stored by this call."""
        new = [o for tid, o in latest.items() if tid not in existing]
        replaced = [self._row(o) for tid, o in latest.items() if tid in existing and not existing[tid]]
        inserted = self._insert(new)
        for row in replaced:
            row.save(using=self.alias, force_update=True)
        return inserted | {r.id for r in replaced if r.success}

    def _insert(self, outcomes: list[Outcome]) -> set[str]:
        """Insert the rows of outcomes and return their ids; a row whose id is already stored is left out."""
        if not outcomes:
            return set()
        try:
            with transaction.atomic(using=self.alias):
                self._insert_many(outcomes)
            return {o.task.id for o in outcomes}
        except IntegrityError:
            pass
        # Another monitor stored one of these ids meanwhile, or a task_name repeats:
        # save one by one, leave stored ids alone and make clashing names unique.
        inserted = set()
        for row in map(self._row, outcomes):
            if Task.objects.using(self.alias).filter(id=row.id).exists():
                continue
            try:
                with transaction.atomic(using=self.alias):
                    row.save(using=self.alias, force_insert=True)
            except IntegrityError:
                row.name = f"{row.name[:90]}-{row.id[-6:]}"
                with transaction.atomic(using=self.alias):
                    row.save(using=self.alias, force_insert=True)
            inserted.add(row.id)
        return inserted

    def _existing(self, ids: list[str]) -> dict[str, bool]:
        """{id: success} of the rows already stored for these task ids, in one SELECT."""
        if not ids:
            return {}
        connection = db.connections[self.alias]
        quote = connection.ops.quote_name
        id_column, success_column = (quote(Task._meta.get_field(name).column) for name in ("id", "success"))
        sql = (f"SELECT {id_column}, {success_column} FROM {quote(Task._meta.db_table)} "
               f"WHERE {id_column} IN ({', '.join(['%s'] * len(ids))})")
        with connection.cursor() as cursor:
            cursor.execute(sql, ids)
            return {task_id: bool(success) for task_id, success in cursor.fetchall()}

    def _insert_many(self, outcomes: list[Outcome]) -> None:
        """bulk_create's INSERT without its model instances and per-field SQL compiling: one
        executemany over prepared values.

        Each value is prepared as its field's get_db_prep_save would, as
        bulk_create sends it (pickled fields, datetimes for the backend); see
        _preparer for the short cuts.
        """
        connection = db.connections[self.alias]
        fields = [(f.attname, _preparer(f, connection)) for f in _concrete_fields()]
        sql = _insert_sql(connection)
        values = []
        for outcome in outcomes:
            data = self._fields(outcome)
            values.append([prepare(data[name]) for name, prepare in fields])
        with connection.cursor() as cursor:
            for start in range(0, len(values), INSERT_CHUNK):
                cursor.executemany(sql, values[start : start + INSERT_CHUNK])

    def prune_if_due(self, force: bool = False) -> None:
        """Prune successes to save_limit, at most every PRUNE_EVERY seconds unless forced."""
        if self.prune_pending and (force or time.monotonic() - self.pruned_at >= PRUNE_EVERY):
            self._prune()
            self.prune_pending = False
            self.pruned_at = time.monotonic()

    def _prune(self) -> None:
        keep = self.config.save_limit
        old = Success.objects.using(self.alias).filter(parent__isnull=True).order_by("-stopped")
        excess = list(old.values_list("id", flat=True)[keep : keep + 10_000])
        if excess:
            Task.objects.using(self.alias).filter(id__in=excess).delete()

    def _after(self, outcome: Outcome, row: Task) -> None:
        task = outcome.task
        if task.parent:
            self._fold(task)
            return
        if task.chain and not outcome.cancelled:
            self._continue_chain(task)
        self._finish(task.hook, row)

    def _finish(self, hook: str | None, row: Task) -> None:
        if hook:
            try:
                from ..tasks import resolve

                resolve(hook)(row)
            except Exception:
                logger.exception("hook %s of task %s (%s) failed", hook, row.name, row.id)
        signals.post_execute.send(sender="django_q", task=row)

    def _continue_chain(self, task: TaskPackage) -> None:
        from ..tasks import OPTION_NAMES, build_package, enqueue_packages, run_sync

        func, args, kwargs = task.chain[0]
        kwargs = dict(kwargs)
        options = {k: kwargs.pop(k) for k in OPTION_NAMES & kwargs.keys()}
        options.update(group=task.group, cluster=task.cluster)
        try:
            nxt = build_package(func, args, kwargs, options, self.config, chain=task.chain[1:])
        except Exception:
            logger.exception("chain of group %s could not continue after task %s", task.group, task.id)
            return
        if self.sync:
            run_sync(nxt, self.config)
            return
        try:
            enqueue_packages([nxt], self.config)
        except Exception:
            logger.exception("chain of group %s could not continue after task %s", task.group, task.id)

    def _fold(self, task: TaskPackage) -> None:
        """Once every part of an async_iter ran, save the list of results under the parent id."""
        tasks = Task.objects.using(self.alias)
        parts = list(tasks.filter(parent=task.parent).order_by("id"))
        if len(parts) < task.iter_count or tasks.filter(id=task.parent).exists():
            return
        row = Task(
            id=task.parent,
            name=task.name.rsplit("-", 1)[0],
            func=task.func_name[:256],
            hook=task.hook,
            args=[p.args for p in parts],
            kwargs=task.kwargs,
            result=[p.result for p in parts],
            group=task.group,
            cluster=parts[-1].cluster,
            started=min(p.started for p in parts),
            stopped=max(p.stopped for p in parts),
            success=all(p.success for p in parts),
            status=Task.SUCCESS if all(p.success for p in parts) else Task.FAILURE,
            attempt_count=max(p.attempt_count for p in parts),
        )
        try:
            with transaction.atomic(using=self.alias):
                row.save(using=self.alias, force_insert=True)
                tasks.filter(parent=task.parent).delete()
        except IntegrityError:
            return  # another monitor folded it first
        self._finish(task.hook, row)


class Monitor:
    """The monitor process's loop around a Recorder."""

    def __init__(self, conn: Any, config: Config) -> None:
        self.conn = conn
        self.recorder = Recorder(config)
        self.outage_since: float | None = None
        self.linger = LINGER_MIN
        self.early_at = BIG_BATCH if config.save_limit <= 0 else BATCH

    def loop(self, timeout: float = 1.0) -> bool:
        """Receive what is there (waiting up to `timeout`), save it, answer; False once told to stop."""
        outcomes: list[Outcome] = []
        dead: list[DeadLetterNote] = []
        stop = False
        if self.conn.poll(timeout):
            linger_until = time.monotonic() + self.linger
            while len(outcomes) + len(dead) < BATCH:
                msg = self.conn.recv()
                if msg is STOP:
                    stop = True
                    break
                for one in msg if type(msg) is tuple else (msg,):  # the pusher sends batches
                    (dead if isinstance(one, DeadLetterNote) else outcomes).append(one)
                # Without a save_limit to prune to, a big batch is saved as soon as
                # nothing more is waiting: every row is written anyway, and lingering
                # would only hold up the pusher, which sends at most BATCH unsaved.
                # With one, lingering fills the batch, and successes beyond
                # save_limit in it are never written (Recorder._unpruned).
                early = len(outcomes) + len(dead) >= self.early_at
                wait = 0.0 if early else max(0.0, linger_until - time.monotonic())
                if not self.conn.poll(wait):
                    break
        if outcomes or dead:
            big = len(outcomes) + len(dead) >= BIG_BATCH
            self.linger = min(LINGER_MAX, self.linger * 2) if big else max(LINGER_MIN, self.linger / 2)
            send(self.conn, self.save(outcomes, dead))
        elif self.recorder.prune_pending:
            self._idle_prune()
        return not stop

    def _idle_prune(self) -> None:
        """Finish a prune put off while results were coming; an outage just puts it off again."""
        try:
            self.recorder.prune_if_due(force=True)
        except DatabaseError as exc:
            logger.warning("pruning results failed, will retry: %s", exc)
            db.connections.close_all()

    def save(self, outcomes: list[Outcome], dead: list[DeadLetterNote]) -> Saved:
        """Record a batch, waiting out database outages with a growing pause."""
        pause = 0.1
        while True:
            try:
                saved = self.recorder.record(outcomes, dead)
            except DatabaseError as exc:
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    logger.error("saving %s results failed, will retry: %s", len(outcomes), exc)
                db.connections.close_all()
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if self.outage_since is not None:
                logger.warning("results saved again after %.1fs", time.monotonic() - self.outage_since)
                self.outage_since = None
            return saved


def main(address: str, authkey: bytes, config: Config) -> None:
    """Process entry point: save results until the pusher says stop; reconnect if it is replaced.

    The process also runs the cluster's scheduler, in a thread; the sentinel's
    SIGTERM stops it (the monitor itself goes on until the pusher says stop).
    """
    from .scheduler import SchedulerThread

    process.setup("monitor", config.name)
    scheduler = SchedulerThread(config)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    scheduler.start()
    try:
        while True:
            conn = process.connect(address, authkey, Hello(Role.MONITOR, os.getpid()))
            if conn is None:
                sys.exit(Exit.UNREACHABLE)
            monitor = Monitor(conn, config)
            try:
                while monitor.loop():
                    pass
                return
            except (EOFError, OSError):
                continue  # the pusher died: its replacement resends what was not saved
            finally:
                conn.close()
    finally:
        scheduler.stop()
        scheduler.join(5.0)  # its pass under way finishes
        db.connections.close_all()
