"""Tasks that have not finished: what the broker holds of them, shown as unsaved Task rows.

A stored `Task` row exists only once a task finished. Before that the broker
is the one place that knows the task: queued (or due later), or leased by a
cluster whose pusher recorded, when a worker started it, a `RunningInfo`
(`Broker.mark_running`). `find` and `pending_tasks` turn those into `Task`
instances with status queued or running, which `fetch(id, in_flight=True)`
and the admin show. A running task's last progress report (context.progress)
is read from the status its cluster publishes (django_q.status), never from
the package: a report costs the task no broker call.
"""

from __future__ import annotations

from .brokers import get_broker
from .brokers.base import LEASED, Pending, RunningInfo
from .conf import Config, get_config
from .exceptions import PackageError
from .models import Task
from .package import unpack
from .rows import epoch_datetime, row_fields
from .status import cluster_statuses

# (cluster identity, task id) -> the task's last progress report, as published
Reports = dict[tuple[str, str], dict]


def task_of(pending: Pending, config: Config, reports: Reports | None = None) -> Task | None:
    """An unsaved Task for a package still in the broker; None if the package is not a valid one of ours.
    A running task's progress is looked up in `reports` (progress_reports())."""
    try:
        package = unpack(pending.payload, config.package_limit)
    except PackageError:
        return None
    running = RunningInfo.decode(pending.running) if pending.state == LEASED else None
    # Unsaved, of a task still in the broker: not started, stopped nor decided yet,
    # where django-stubs types the fields of a saved row (never None).
    task = Task(  # type: ignore[misc]
        **row_fields(package),
        cluster=running.cluster if running else package.cluster or config.name,
        started=epoch_datetime(running.started) if running else None,
        stopped=None,
        success=None,
        attempt_count=pending.attempts,
        status=Task.RUNNING if running else Task.QUEUED,
        worker=running.worker if running else None,
    )
    # Not fields: the broker's own view, for the admin and tasks_backend.
    task.broker_state = pending.state
    task.due = epoch_datetime(pending.due) if pending.state != LEASED else None
    task.package = package
    if running is not None and reports:
        task.progress = reports.get((running.cluster_id, package.id))
    return task


def progress_reports(cluster: str | None, config: Config) -> Reports:
    """The progress reports of the tasks running in the clusters of queue `cluster`, by their statuses."""
    return {
        (status.id, worker.task_id): worker.progress
        for status in cluster_statuses(cluster, config)
        for worker in status.workers
        if worker.task_id and worker.progress
    }


def find(task_id: str, cluster: str | None = None) -> Task | None:
    """The unsaved Task of `task_id` while it is in the broker of `cluster`, else None."""
    config = get_config()
    pending = get_broker(cluster, config).lookup(task_id)
    if pending is None:
        return None
    return task_of(pending, config, progress_reports(cluster, config) if pending.state == LEASED else None)


def pending_tasks(cluster: str | None = None, limit: int = 100) -> list[Task]:
    """Unsaved Tasks for up to `limit` packages of the queue: running first, then in the order they go out."""
    config = get_config()
    pending = get_broker(cluster, config).pending(limit)
    reports = progress_reports(cluster, config) if any(p.state == LEASED for p in pending) else None
    found = (task_of(p, config, reports) for p in pending)
    return [task for task in found if task is not None]
