"""Saving what became of tasks: Task rows in batches, pruning, hooks, chains and async_iter folding.

The pusher's saver thread (cluster.saving) records the outcomes workers send;
sync mode and cancel() record theirs here too. A batch is saved in one transaction; hooks, chains
and post_execute follow for the results it stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django import db
from django.db import DatabaseError, IntegrityError, models, router, transaction

from . import cached, deadletters, signals
from .conf import Config
from .funcs import resolve
from .models import Success, Task
from .outcomes import DeadLetterNote, Outcome, Saved
from .package import TaskPackage
from .rows import epoch_datetime, row_fields

logger = logging.getLogger("django_q")

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


def exception_line(outcome: Outcome) -> str:
    """The last line of a failure's traceback (`ZeroDivisionError: division by zero`), or what the
    cluster says of a failure the task did not raise, after the name of the exception it gives it."""
    text = str(outcome.result).strip()
    last = text.splitlines()[-1] if text else ""
    if outcome.exception and not text.startswith("Traceback"):
        return f"{outcome.exception.rsplit('.', 1)[-1]}: {last}"
    return last


class Recorder:
    """Turns outcomes into Task rows and runs what follows a finished task."""

    def __init__(self, config: Config, chain: Callable[[TaskPackage], Any] | None = None) -> None:
        self.config = config
        self.chain = chain  # enqueues the next link of a finished chain (django_q.enqueue.continue_chain)
        self.prune_pending = False
        self.pruned_at = 0.0  # monotonic time of the last prune
        self.alias = router.db_for_write(Task)

    def record(self, outcomes: Sequence[Outcome], dead: Sequence[DeadLetterNote] = ()) -> Saved:
        """Save a batch in one transaction, then run hooks, chains and iter folding for new results."""
        repeats = self._folded_parts(outcomes)
        live = [o for o in outcomes if o not in repeats] if repeats else outcomes
        # A cached task's result goes to Django's cache instead (an iter's part waits in the database).
        to_db: list[Outcome] = []
        to_cache: list[Outcome] = []
        for o in live:
            (to_cache if o.task.cached and not o.task.parent else to_db).append(o)
        kept = self._cache(to_cache) if to_cache else []
        if to_cache:
            live = to_db + kept
        stored = self._unpruned([o for o in to_db if self._keeps(o)])
        latest = {o.task.id: o for o in stored}  # a batch may hold one task twice
        # Read before the transaction, so that on SQLite it opens with a write and
        # waits for the lock instead of failing to upgrade a read lock.
        existing = self._existing(list(latest))
        with transaction.atomic(using=self.alias):
            if dead:
                deadletters.store(dead, self.config, self.alias)
            fresh = self._store(latest, existing)
        if self.config.save_limit > 0 and any(o.success for o in stored):
            self.prune_pending = True
        try:
            self.prune_if_due()
        except DatabaseError as exc:  # the batch is saved; its hooks must still run
            logger.warning("pruning results failed, will retry: %s", exc)
        self._failures(live, latest, {o.task.id for o in kept})
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

    def _cache(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Keep outcomes of `cached` tasks in Django's cache, not the database; those stored now, for their hooks."""
        kept = []
        for outcome in outcomes:
            try:
                if cached.store(self.config, outcome.cluster, self._fields(outcome), outcome.task.cached):
                    kept.append(outcome)
            except Exception:  # the cache is down or refuses the value: say so, as a result that cannot be saved
                logger.exception("result of task %s (%s) could not be kept in the cache %r",
                                 outcome.task.name, outcome.task.id, self.config.cache)
        return kept

    def _failures(self, live: Sequence[Outcome], latest: dict[str, Outcome], cached_ids: set[str]) -> None:
        """Log each failure just saved (to the database or the cache) at ERROR, and send task_failed with its row."""
        recorded = latest.keys() | cached_ids
        failed = [o for o in live if not o.success and not o.cancelled and o.task.id in recorded]
        if not failed:
            return
        listening = signals.task_failed.has_listeners("django_q")
        for outcome in failed:
            task = outcome.task
            logger.error(
                "task %s (%s) %s failed on attempt %s: %s",
                task.name, task.id, task.func_name, outcome.attempts, exception_line(outcome),
            )
            if listening:
                row = self._row(outcome)
                if task.id in latest:  # as if loaded from the database; a cached one is not there
                    row._state.adding, row._state.db = False, self.alias
                signals.send_task_failed(row)

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
        # Another cluster's saver stored one of these ids meanwhile, or a task_name repeats:
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
        columns = {field.name: field.column for field in Task._meta.concrete_fields if field.column}
        id_column, success_column = quote(columns["id"]), quote(columns["success"])
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
                resolve(hook)(row)
            except Exception:
                logger.exception("hook %s of task %s (%s) failed", hook, row.name, row.id)
        if signals.post_execute.has_listeners("django_q"):
            signals.post_execute.send(sender="django_q", task=signals.row_info(row))

    def _continue_chain(self, task: TaskPackage) -> None:
        if self.chain is None:
            logger.error("chain of group %s stops after task %s: nothing here continues chains", task.group, task.id)
            return
        try:
            self.chain(task)
        except Exception:
            logger.exception("chain of group %s could not continue after task %s", task.group, task.id)

    def _fold(self, task: TaskPackage) -> None:
        """Once every part of an async_iter ran, save the list of results under the parent id."""
        tasks = Task.objects.using(self.alias)
        parent = task.parent
        parts = list(tasks.filter(parent=parent).order_by("id"))
        if parent is None or len(parts) < task.iter_count or tasks.filter(id=parent).exists():
            return
        row = Task(
            id=parent,
            name=task.name.rsplit("-", 1)[0],
            func=task.func_name[:256],
            hook=task.hook,
            args=[p.args for p in parts],
            kwargs=task.kwargs,
            result=[p.result for p in parts],
            group=task.group if task.group != task.parent else None,  # iter_count: the group is its id
            cluster=parts[-1].cluster,
            started=min(p.started for p in parts),
            stopped=max(p.stopped for p in parts),
            success=all(p.success for p in parts),
            status=Task.SUCCESS if all(p.success for p in parts) else Task.FAILURE,
            attempt_count=max(p.attempt_count for p in parts),
        )
        if task.iter_cached:
            fields = {f.attname: getattr(row, f.attname) for f in _concrete_fields()}
            cached.store(self.config, row.cluster or self.config.name, fields, task.iter_cached)
            tasks.filter(parent=task.parent).delete()
            self._finish(task.hook, row)
            return
        try:
            with transaction.atomic(using=self.alias):
                row.save(using=self.alias, force_insert=True)
                tasks.filter(parent=task.parent).delete()
        except IntegrityError:
            return  # another saver folded it first
        self._finish(task.hook, row)
