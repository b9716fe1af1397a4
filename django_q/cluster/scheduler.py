"""The scheduler: turns due schedules into tasks, each occurrence once however many clusters run.

A pass (`Scheduler.loop(now)`) reads the due schedules of this cluster (those
whose `cluster` is unset or this cluster's name), decides with
`django_q.schedules.plan` whether each runs and when it runs next, claims the
row and enqueues its task. `SchedulerThread` runs a pass every INTERVAL seconds,
in the pusher's process.

Claiming: `UPDATE ... WHERE id = <id> AND next_run = <the value read>`. Of any
number of schedulers that read a due row, only the one whose statement
changed it enqueues; the others see no row changed and move on. The order of
the claim and the enqueue is what makes a kill at any point harmless:

- Database broker in the schedule's database: the claim (next run, repeats,
  task id) and the broker's INSERT commit in one transaction, both or
  neither: exactly once, even under SIGKILL.
- Any other broker: the claim cannot commit with the enqueue, so it is done
  in three steps. (1) The claim moves next_run to a short hold (now +
  CLAIM_HOLD) and records the task id in `enqueuing`; (2) the task is
  enqueued; (3) next_run moves on and `enqueuing` is cleared. A scheduler
  killed, or a broker failing, after (1) leaves the hold behind; when it
  expires the row is due again and whoever claims it enqueues the same task
  id (unless that task's result is stored already). A kill thus delays a run
  by at most CLAIM_HOLD. Only a kill between (2) and (3) sends a task twice,
  and the copy has the same id: the cluster saves one result per id and
  skips a task whose success is stored.

A row the scheduler cannot turn into a task (saved without validation: a bad
cron expression, argument text that is not literals, ...) is stopped: its
next_run is cleared and a failed Task saying why becomes its last run. A row
that fails in an unexpected way is logged and left alone for BAD_ROW_PAUSE
seconds. A database or broker outage ends the pass; `main` retries it after
a growing pause.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from django import db
from django.conf import settings
from django.db import InterfaceError, OperationalError, router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .. import reporters, signals
from ..backoff import Outage
from ..brokers import close_brokers, get_broker
from ..conf import Config
from ..enqueue import enqueue, group_of, schedule_call
from ..exceptions import BrokerConnectionError, PackageError, TaskTypeError
from ..models import Schedule, Task
from ..names import humanize, new_id
from ..schedules import ScheduleError, Step, plan

logger = logging.getLogger("django_q")

INTERVAL = 1.0  # seconds between passes
BATCH = 100  # due rows read at once; a pass reads again while batches come back full
MAX_BATCHES = 10  # per pass, so that a backlog cannot keep the process from its stop checks
CLAIM_HOLD = timedelta(seconds=30)  # how long a claimed row waits for its enqueue before it is due again
BAD_ROW_PAUSE = 60.0  # seconds a row that failed unexpectedly is left alone
OUTAGE_PAUSE_MAX = 30.0  # seconds between passes at most while the database or broker is down
# Errors that say the database or broker is out of reach, not that a row is bad.
OUTAGES = (OperationalError, InterfaceError, BrokerConnectionError)


class Scheduler:
    """Turns due schedules into tasks; each `loop()` is one pass."""

    def __init__(self, config: Config, alias: str | None = None) -> None:
        self.config = config
        self.alias = alias or router.db_for_write(Schedule)
        self.task_alias = router.db_for_write(Task)
        # The claim and the enqueue can commit together only when the queue is a
        # table of the schedules' database.
        self.atomic = config.broker_kind == "orm" and config.orm_alias == self.alias
        self.tz = timezone.get_default_timezone()
        self.paused: dict[int, float] = {}  # schedule id -> time.monotonic() at which it is tried again

    def loop(self, now: datetime | None = None) -> list[str]:
        """Run one pass as of `now` (default: the current time); return the ids of the tasks enqueued."""
        now = self._utc(now or timezone.now())
        enqueued: list[str] = []
        for _ in range(MAX_BATCHES):
            rows = self._due(now)
            for row in rows:
                task_id = self._handle(row, now)
                if task_id:
                    enqueued.append(task_id)
            if len(rows) < BATCH:
                break
        return enqueued

    def _due(self, now: datetime) -> list[Schedule]:
        clock = time.monotonic()
        self.paused = {pk: until for pk, until in self.paused.items() if until > clock}
        return list(self._due_query(now))

    def _due_query(self, now: datetime) -> QuerySet[Schedule]:
        mine = Q(cluster__isnull=True) | Q(cluster="") | Q(cluster__in=self.config.served_queues)
        rows = (
            Schedule.objects.using(self.alias)
            .filter(mine, next_run__lte=self._db(now))
            .exclude(repeats=0)
            .exclude(pk__in=list(self.paused))
            .order_by("next_run", "pk")
        )
        return rows[:BATCH]

    def compile_pass(self) -> None:
        """Compile a pass's query without running it (no connection is opened).

        The sentinel calls it before it forks the pusher: the first compile of a
        query builds Django's lazily made lookup and field caches and specializes
        the code that compiles it, which, done after the fork, made about 1.5 MiB
        of the pusher's memory its own (the scheduler's first pass, on SQLite);
        done before, the pusher shares them.
        """
        self._due_query(timezone.now()).query.get_compiler(using=self.alias).as_sql()

    def _handle(self, row: Schedule, now: datetime) -> str | None:
        try:
            return self._fire(row, now)
        except (ScheduleError, TaskTypeError, PackageError) as exc:
            self._stop(row, exc, now)
        except OUTAGES:
            raise
        except Exception:
            logger.exception("schedule %s (id %s) failed; trying it again in %ss", row, row.pk, BAD_ROW_PAUSE)
            self.paused[row.pk] = time.monotonic() + BAD_ROW_PAUSE
        return None

    def _fire(self, row: Schedule, now: datetime) -> str | None:
        """Claim the row and enqueue its task; the task id, or None if it was skipped or claimed elsewhere."""
        # The call (args, kwargs, options) is read once, and only when needed: to see where a run that may
        # not overlap went, or to send one.
        assert row.next_run is not None  # _due picks rows by next_run
        call = None if self._may_overlap(row) else self._call(row)
        busy = call is not None and self._busy(row, call[2].get("cluster"))
        step = plan(
            row.schedule_type, self._utc(row.next_run), row.repeats, now, self.tz,
            anchor=row.anchor and self._utc(row.anchor), minutes=row.minutes, cron=row.cron,
            catch_up=self.config.catch_up, claimed=bool(row.enqueuing), busy=busy,
        )
        if not step.run:
            if not self._settle(row, step, {"next_run": row.next_run}):
                return None
            if busy:
                logger.info("schedule %s (id %s): run due at %s skipped: its previous run, task %s, is still "
                            "queued or running (overlap off); next run %s", row, row.pk, row.next_run, row.task,
                            step.next_run)
            else:
                logger.info("schedule %s (id %s): missed runs skipped (catch_up off), next run %s", row, row.pk,
                            step.next_run)
            return None
        task_id = row.enqueuing or new_id()
        args, kwargs, options = call or self._call(row)  # a ScheduleError stops the row before it is claimed
        options["sync"] = False  # the cluster's scheduler always goes through the broker

        def send() -> None:
            enqueue(row.func, [args], kwargs, options, ids=[task_id], config=self.config)

        if self.atomic:
            with transaction.atomic(using=self.alias):
                if not self._settle(row, step, {"next_run": row.next_run}, task_id):
                    return None
                send()
        else:
            hold = self._db(now + CLAIM_HOLD)
            claim = {"next_run": hold, "enqueuing": task_id, "anchor": step.anchor and self._db(step.anchor)}
            if not self._rows(row, next_run=row.next_run).update(**claim):
                return None
            row.next_run = hold
            stored = row.enqueuing and Task.objects.using(self.task_alias).filter(id=task_id).exists()
            if not stored:
                send()
            self._settle(row, step, {"enqueuing": task_id}, task_id)
        logger.info("schedule %s (id %s): task %s enqueued, next run %s", row, row.pk, task_id, step.next_run)
        return task_id

    def _call(self, row: Schedule) -> tuple[tuple, dict, dict]:
        """schedule_call(row), sent to the row's queue: the scheduler serves every queue of its cluster, and
        a task enqueued without `cluster` goes to the cluster's name."""
        args, kwargs, options = schedule_call(row)
        if row.cluster and row.cluster != self.config.name:
            options.setdefault("cluster", row.cluster)
        return args, kwargs, options

    @staticmethod
    def _may_overlap(row: Schedule) -> bool:
        """Whether `row` runs whatever its previous run does: overlap on, no previous run, a claimed run
        under way, or a ONCE schedule (no previous run of its own series)."""
        return row.overlap or not row.task or bool(row.enqueuing) or row.schedule_type == Schedule.ONCE

    def _busy(self, row: Schedule, queue: str | None) -> bool:
        """Whether the last task of `row` is still in `queue` (a q_options among its kwargs may route it
        elsewhere than the cluster's), queued or running.

        Not atomic with the claim, and it need not be: the claim lets one
        scheduler act on an occurrence, and a previous run that ends in
        between only makes it skip a run it could have made.
        """
        assert row.task is not None  # a row with no previous run may overlap: only others are looked up
        return get_broker(queue or self.config.name, self.config).lookup(row.task) is not None

    def _settle(self, row: Schedule, step: Step, where: dict, task_id: str | None = None) -> bool:
        """Write the step's outcome to the row if it still matches `where`; False if it did not."""
        rows = self._rows(row, **where)
        if step.delete:
            return rows.delete()[0] > 0
        values: dict[str, object] = {
            "next_run": step.next_run and self._db(step.next_run),
            "repeats": step.repeats,
            "anchor": step.anchor and self._db(step.anchor),
            "enqueuing": None,
        }
        if task_id:
            values["task"] = task_id
        return rows.update(**values) > 0

    def _stop(self, row: Schedule, error: Exception, now: datetime) -> None:
        """Stop a schedule that cannot run: next_run cleared, a failed Task with the reason as its last run."""
        task_id = new_id()
        reason = f"schedule {row} (id {row.pk}) cannot run: {error}"
        with transaction.atomic(using=self.alias):
            if not self._rows(row, next_run=row.next_run).update(next_run=None, task=task_id, enqueuing=None):
                return  # changed meanwhile: fixed, or stopped by another scheduler
            failed = Task.objects.using(self.task_alias).create(
                id=task_id, name=humanize(task_id), func=row.func[:256], hook=row.hook, result=reason,
                group=group_of(row), cluster=self.config.name, started=self._db(now), stopped=self._db(now),
                success=False,
            )
        logger.error("%s; it is stopped until it is fixed and given a next run", reason)
        # A failure like a task's: to the error reporters, and task_failed with its saved row.
        reporters.report(self.config, ScheduleError(reason))
        signals.send_task_failed(failed)

    def _rows(self, row: Schedule, **where: object) -> QuerySet:
        return Schedule.objects.using(self.alias).filter(pk=row.pk, **where)

    def _utc(self, t: datetime) -> datetime:
        """A database or clock value as aware UTC (without USE_TZ they are naive TIME_ZONE times)."""
        return (t.replace(tzinfo=self.tz) if timezone.is_naive(t) else t).astimezone(UTC)

    def _db(self, t: datetime) -> datetime:
        """An aware time as the database keeps it."""
        return t if settings.USE_TZ else timezone.make_naive(t, self.tz)


class SchedulerThread(threading.Thread):
    """The scheduler, run in a thread of the pusher's process: a pass every INTERVAL seconds until stopped.

    A thread rather than a process of its own: it costs the cluster no extra
    copy of Django in memory. It lives in the pusher because the pusher never
    forks; a thread of the sentinel, which forks workers, could leave a child
    with a lock the thread held in a database driver. When the pusher dies,
    its replacement starts a new scheduler.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(name="django_q-scheduler", daemon=True)
        self.config = config
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Finish the pass under way, then end."""
        self.stopping.set()

    def run(self) -> None:
        scheduler = Scheduler(self.config)
        outage = Outage(logger, "scheduler: database or broker unreachable, will retry: %s",
                        "scheduler: running again after %.1fs", first=2 * INTERVAL, most=OUTAGE_PAUSE_MAX)
        try:
            while not self.stopping.is_set():
                try:
                    scheduler.loop()
                except Exception as exc:  # the thread's boundary: log, wait, try again; never end
                    if isinstance(exc, OUTAGES):
                        pause = outage.failed(exc)
                    else:
                        pause = outage.failed(message="scheduler: pass failed, will retry", exc_info=True)
                    db.connections.close_all()
                    close_brokers()
                else:
                    outage.recovered()
                    pause = INTERVAL
                self.stopping.wait(pause)
        finally:
            close_brokers()
            db.connections.close_all()
