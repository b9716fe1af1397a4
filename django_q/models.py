"""Stored tasks, schedules, the database broker's queue and cluster statuses, and the dead letters."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .conf import get_config
from .extras import installed, missing
from .funcs import importable
from .guard import denied, refusal
from .schedules import CRON, CRON_FEATURE, Recurrence, ScheduleError, parse_args, parse_kwargs

if TYPE_CHECKING:
    from datetime import datetime

    from .package import TaskPackage


class PickledObjectField(models.BinaryField):
    """Any picklable value, stored as a pickle. Only the cluster and the project write it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("null", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return super().get_prep_value(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        return pickle.loads(bytes(value))

    def to_python(self, value: Any) -> Any:
        return value

    def value_to_string(self, obj: Any) -> str:
        return repr(self.value_from_object(obj))


class Task(models.Model):
    """A task that ran: its call, its result (or traceback) and its timing.

    Stored rows are finished: succeeded, failed or cancelled. `fetch(id,
    in_flight=True)` also returns unsaved instances for tasks still in the
    broker, with `status` queued or running and `success` None (see
    `django_q.inflight`).
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    STATUS = [
        (QUEUED, _("Queued")),
        (RUNNING, _("Running")),
        (SUCCESS, _("Succeeded")),
        (FAILURE, _("Failed")),
        (CANCELLED, _("Cancelled")),
    ]

    id = models.CharField(max_length=32, primary_key=True, editable=False)
    name = models.CharField(max_length=100, unique=True, editable=False)
    func = models.CharField(max_length=256)
    hook = models.CharField(max_length=256, null=True, blank=True)
    args = PickledObjectField()
    kwargs = PickledObjectField()
    result = PickledObjectField()
    group = models.CharField(max_length=100, null=True, blank=True, db_index=True)
    cluster = models.CharField(max_length=100, null=True, blank=True)
    parent = models.CharField(max_length=32, null=True, blank=True, db_index=True, editable=False)
    started = models.DateTimeField(editable=False)
    stopped = models.DateTimeField(editable=False, db_index=True)
    success = models.BooleanField(default=True, editable=False)
    attempt_count = models.IntegerField(default=0)
    status = models.CharField(max_length=10, choices=STATUS, default=SUCCESS, editable=False)
    priority = models.SmallIntegerField(default=0, editable=False)
    enqueued = models.DateTimeField(null=True, editable=False)
    # Where the last attempt ran ("host:pid"); earlier attempts' workers and
    # errors are in `history`, a list of dicts (worker, exception, traceback, stopped).
    worker = models.CharField(max_length=100, null=True, editable=False)
    # The dotted path of the exception class of a failure, when it raised one.
    exception = models.CharField(max_length=256, null=True, editable=False)
    history = PickledObjectField()
    # Not a field: the last progress report of a running task (a dict of done,
    # total, note), set on the unsaved Tasks of django_q.inflight; None otherwise.
    progress: dict | None = None
    # Nor these, set on those unsaved Tasks alone: the broker's state of the
    # package, when a deferred one is due, the package, and the progress as text (the admin).
    broker_state: str
    due: datetime | None
    package: TaskPackage
    progress_text: str

    class Meta:
        app_label = "django_q"
        ordering = ["-stopped"]
        verbose_name = _("task")

    def __str__(self) -> str:
        return self.name or self.id

    def time_taken(self) -> float | None:
        """Seconds from start to stop; None while the task has not finished."""
        if self.started is None or self.stopped is None:
            return None
        return (self.stopped - self.started).total_seconds()

    @property
    def finished(self) -> bool:
        return self.status in (self.SUCCESS, self.FAILURE, self.CANCELLED)

    @staticmethod
    def get_result(task_id: str) -> Any:
        """The result of a task by id or name, or None."""
        task = Task.get_task(task_id)
        return task.result if task else None

    @staticmethod
    def get_task(task_id: str) -> Task | None:
        """A stored task by id (32 hex characters) or by name."""
        lookup = {"id": task_id} if _looks_like_id(task_id) else {"name": task_id}
        return Task.objects.filter(**lookup).first()



def _looks_like_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


class SuccessManager(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(success=True)


class InFlight(Task):
    """The admin's page of tasks still in the broker (queued, deferred, running); it has no rows of its own."""

    class Meta:
        app_label = "django_q"
        proxy = True
        verbose_name = _("queued or running task")


class FailureManager(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(success=False)


class Success(Task):
    objects: ClassVar[SuccessManager] = SuccessManager()

    class Meta:
        app_label = "django_q"
        proxy = True
        verbose_name = _("successful task")


class Failure(Task):
    objects: ClassVar[FailureManager] = FailureManager()

    class Meta:
        app_label = "django_q"
        proxy = True
        verbose_name = _("failed task")


def validate_cron(value: str) -> None:
    """Raise ValidationError unless `value` is a cron expression croniter accepts (the [cron] extra)."""
    if not installed("croniter"):
        raise ValidationError(str(missing("croniter", CRON_FEATURE)))
    from croniter import croniter  # cron schedules alone need croniter

    if not croniter.is_valid(value):
        raise ValidationError(_("%(value)s is not a valid cron expression"), params={"value": value})


def validate_cron_occurs(value: str | None) -> str | None:
    """Why a valid cron expression never runs (e.g. "0 0 30 2 *"), or None."""
    if not value or not installed("croniter"):
        return None  # the field's validator reports it
    from croniter import croniter  # only cron schedules need croniter

    if not croniter.is_valid(value):
        return None  # the field's validator reports it
    now = timezone.now() if settings.USE_TZ else timezone.make_aware(timezone.now())
    try:
        Recurrence(CRON, now, timezone.get_default_timezone(), cron=value).after(now)
    except ScheduleError as exc:
        return str(exc)
    return None


class Schedule(models.Model):
    """A task to enqueue on a schedule. Run by the cluster's scheduler (`django_q.cluster.scheduler`).

    Each due occurrence is enqueued once however many clusters run (see
    `django_q.schedules` for when each type recurs, in TIME_ZONE). `repeats`
    counts runs down: n runs n more times; -1 (any negative count) runs forever
    and keeps counting down, as in django-q. A finished schedule (its repeats
    reached 0) is kept with `next_run` None, so that its last task and result
    stay linked; a ONCE schedule with negative repeats is deleted once its task
    is enqueued (django-q's behaviour; give it repeats=1 to keep it). A schedule
    the scheduler cannot run (it bypassed validation) is stopped the same way,
    `next_run` None, with a failed task saying why.
    """

    ONCE = "O"
    MINUTES = "I"
    HOURLY = "H"
    DAILY = "D"
    WEEKLY = "W"
    BIWEEKLY = "BW"
    MONTHLY = "M"
    BIMONTHLY = "BM"
    QUARTERLY = "Q"
    YEARLY = "Y"
    CRON = "C"
    TYPE = [
        (ONCE, _("Once")),
        (MINUTES, _("Minutes")),
        (HOURLY, _("Hourly")),
        (DAILY, _("Daily")),
        (WEEKLY, _("Weekly")),
        (BIWEEKLY, _("Biweekly")),
        (MONTHLY, _("Monthly")),
        (BIMONTHLY, _("Bimonthly")),
        (QUARTERLY, _("Quarterly")),
        (YEARLY, _("Yearly")),
        (CRON, _("Cron")),
    ]

    name = models.CharField(max_length=100, null=True, blank=True)
    func = models.CharField(max_length=256, help_text="e.g. module.tasks.function")
    hook = models.CharField(max_length=256, null=True, blank=True, help_text="e.g. module.tasks.result_function")
    args = models.TextField(null=True, blank=True, help_text=_("e.g. 1, 2, 'John'"))
    kwargs = models.TextField(null=True, blank=True, help_text=_("e.g. x=1, y=2, name='John'"))
    schedule_type = models.CharField(max_length=2, choices=TYPE, default=ONCE, verbose_name=_("Schedule Type"))
    minutes = models.PositiveIntegerField(null=True, blank=True, help_text=_("Number of minutes for the Minutes type"))
    repeats = models.IntegerField(default=-1, verbose_name=_("Repeats"), help_text=_("n = n times, -1 = forever"))
    next_run = models.DateTimeField(
        verbose_name=_("Next Run"), default=timezone.now, null=True, blank=True, db_index=True,
        help_text=_("Empty once the schedule has finished"),
    )
    cron = models.CharField(max_length=100, null=True, blank=True, validators=[validate_cron])
    task = models.CharField(max_length=100, null=True, editable=False)
    cluster = models.CharField(max_length=100, null=True, blank=True)
    # The instant the series of occurrences counts from, so that month ends and
    # DST gaps do not shift later runs; set by the scheduler, reset by it when
    # next_run is moved off the series.
    anchor = models.DateTimeField(null=True, editable=False)
    # The id of a task a scheduler claimed but may not have enqueued yet (a
    # broker outside the schedule's database); see django_q.cluster.scheduler.
    enqueuing = models.CharField(max_length=32, null=True, editable=False)
    overlap = models.BooleanField(
        default=True, verbose_name=_("Overlap"),
        help_text=_("Run an occurrence even while the previous run is still queued or running"),
    )

    # Not a column: the user whose rules `full_clean()` applies to func and hook
    # (the admin sets it). Unset, only the deny list holds; see django_q.guard.
    editor: Any = None

    class Meta:
        app_label = "django_q"
        ordering = ["next_run"]
        verbose_name = _("scheduled task")

    def __str__(self) -> str:
        return self.name or self.func

    def _refusal(self, path: str) -> str | None:
        """Why this schedule may not name the function `path`, or None; see django_q.guard."""
        if self.editor is None:
            problem = denied(path)
        else:
            problem = refusal(path, bool(self.editor.is_superuser), get_config().admin_funcs, self._named)
        return problem or importable(path)

    def _named(self, path: str) -> bool:
        """Whether a stored schedule names `path` as its func or hook."""
        return Schedule.objects.filter(models.Q(func=path) | models.Q(hook=path)).exists()

    def clean(self) -> None:
        """Check what the scheduler needs: the type's settings, literal arguments, functions it may import and run."""
        errors: dict[str, list[str | Promise]] = {}
        if self.schedule_type == self.CRON and not self.cron:
            errors.setdefault("cron", []).append(_("A cron schedule needs a cron expression."))
        elif self.schedule_type == self.CRON and (never := validate_cron_occurs(self.cron)):
            errors.setdefault("cron", []).append(never)
        if self.schedule_type == self.MINUTES and not self.minutes:
            errors.setdefault("minutes", []).append(_("A minutes schedule needs the number of minutes."))
        if self.repeats != 0 and self.next_run is None:
            errors.setdefault("next_run", []).append(_("A schedule that still repeats needs a next run."))
        for field, parse in (("args", parse_args), ("kwargs", parse_kwargs)):
            try:
                parse(getattr(self, field))
            except ScheduleError as exc:
                errors.setdefault(field, []).append(str(exc))
        for field in ("func", "hook"):
            problem = self._refusal(getattr(self, field)) if getattr(self, field) else None
            if problem:
                errors.setdefault(field, []).append(problem)
        if errors:
            raise ValidationError(errors)

    def last_run(self) -> Task | None:
        """The task this schedule enqueued last, once it has run."""
        return Task.get_task(self.task) if self.task else None

    def result(self) -> Any:
        """The result of the last run, or None."""
        task = self.last_run()
        return task.result if task else None

    def success(self) -> bool | None:
        """Whether the last run succeeded; None before it ran."""
        task = self.last_run()
        return task.success if task else None


class OrmQ(models.Model):
    """The database broker's queue: one row per package until it is acked."""

    queue = models.CharField(max_length=100)
    payload = models.BinaryField()
    priority = models.SmallIntegerField(default=0)
    # Epoch seconds from which the row may be handed out: now for a new row, the
    # lease's end for a leased one, the due time for a delayed one.
    visible = models.FloatField()
    leased = models.BooleanField(default=False)
    attempts = models.IntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)
    # The task id, so that a task can be found, and cancelled, while it waits.
    key = models.CharField(max_length=32, null=True, db_index=True)
    # Set by the cluster when a worker starts the task (django_q.brokers.base.RunningInfo).
    running = models.BinaryField(null=True)
    # cancel() asked the cluster running this row to stop it.
    cancel = models.BooleanField(default=False)
    # The digest of a unique task's key (async_task(unique=...)): the constraint
    # below lets one row of a queue hold it, and deleting the row frees it.
    unique_key = models.CharField(max_length=64, null=True)
    # The cluster id that leased the row (dequeue's owner), for releasing a dead cluster's leases.
    owner = models.CharField(max_length=64, null=True)

    class Meta:
        app_label = "django_q"
        verbose_name = _("queued task")
        indexes = [
            models.Index(fields=["queue", "visible"], name="django_q_ormq_ready"),
            models.Index(fields=["queue", "-priority", "id"], name="django_q_ormq_order"),
        ]
        # NULLs never collide, on every database: rows without a key are unconstrained.
        constraints = [models.UniqueConstraint(fields=["queue", "unique_key"], name="django_q_ormq_unique")]

    def __str__(self) -> str:
        return f"{self.queue}#{self.pk}"


class DeadLetter(models.Model):
    """A package the cluster refused to run (bad signature, corrupt, too large), kept aside.

    A package over package_limit keeps only its header (django_q.deadletters.store): `size` says how big it was.
    """

    broker_id = models.CharField(max_length=100)
    queue = models.CharField(max_length=100)
    payload = models.BinaryField()
    reason = models.TextField()
    # Bytes of the package as the broker delivered it; `payload` may hold only its header.
    size = models.BigIntegerField(null=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        app_label = "django_q"
        ordering = ["-created"]
        verbose_name = _("dead letter")

    def __str__(self) -> str:
        return f"{self.queue}:{self.broker_id}"


class Heartbeat(models.Model):
    """The database broker's cluster statuses (django_q.status): one row per running cluster of a queue."""

    queue = models.CharField(max_length=100)
    cluster_id = models.CharField(max_length=64)
    data = models.BinaryField()
    # Epoch seconds after which the row is ignored; the next publication of any
    # cluster of the queue deletes it.
    expires = models.FloatField(db_index=True)

    class Meta:
        app_label = "django_q"
        verbose_name = _("cluster heartbeat")
        constraints = [models.UniqueConstraint(fields=["queue", "cluster_id"], name="django_q_heartbeat_unique")]

    def __str__(self) -> str:
        return f"{self.queue}:{self.cluster_id}"


class QueueHistory(models.Model):
    """The database broker's queue history (django_q.history): one row per writer per minute, the last hour."""

    queue = models.CharField(max_length=100)
    minute = models.IntegerField()  # epoch seconds // 60
    writer = models.CharField(max_length=64)  # the saver that wrote it (its id and the pusher's host and pid)
    data = models.BinaryField()

    class Meta:
        app_label = "django_q"
        verbose_name = _("queue history")
        constraints = [
            models.UniqueConstraint(fields=["queue", "minute", "writer"], name="django_q_queuehistory_unique")
        ]

    def __str__(self) -> str:
        return f"{self.queue}:{self.minute}:{self.writer}"


class Dashboard(Task):
    """The admin's live dashboard (django_q.dashboard); it has no rows of its own."""

    class Meta:
        app_label = "django_q"
        proxy = True
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboard")


class RateLog(models.Model):
    """The database broker's rate limits (Q_CLUSTER['rate_limits']): one sliding log per queue and key."""

    queue = models.CharField(max_length=100)
    key = models.CharField(max_length=200)  # a function's dotted path, or "group:<name>"
    # A JSON list of the last starts within the window, epoch seconds, oldest first (django_q.rates.take).
    starts = models.TextField(default="[]")

    class Meta:
        app_label = "django_q"
        verbose_name = _("rate log")
        constraints = [models.UniqueConstraint(fields=["queue", "key"], name="django_q_ratelog_unique")]

    def __str__(self) -> str:
        return f"{self.queue}:{self.key}"


class LeaseOwner(models.Model):
    """The database broker's owner beats: when each cluster leasing rows of a queue last said it is alive."""

    queue = models.CharField(max_length=100)
    cluster_id = models.CharField(max_length=64)
    seen = models.FloatField()  # epoch seconds of its last beat

    class Meta:
        app_label = "django_q"
        constraints = [models.UniqueConstraint(fields=["queue", "cluster_id"], name="django_q_leaseowner_unique")]
