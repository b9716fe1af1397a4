"""Tasks that have not finished: what the broker holds of them, shown as unsaved Task rows.

A stored `Task` row exists only once a task finished. Before that the broker
is the one place that knows the task: queued (or due later), or leased by a
cluster whose pusher recorded, when a worker started it, a `RunningInfo`
(`Broker.mark_running`). `find` and `pending_tasks` turn those into `Task`
instances with status queued or running, which `fetch(id, in_flight=True)`
and the admin show.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .brokers import get_broker
from .brokers.base import LEASED, Pending
from .conf import Config, get_config
from .exceptions import PackageError
from .models import Task
from .package import unpack
from .rows import epoch_datetime, row_fields


@dataclass(frozen=True, slots=True)
class RunningInfo:
    """Where and since when a leased task runs; kept in the broker while it runs."""

    cluster: str  # the cluster's name (its queue)
    cluster_id: str  # the running cluster's identity (django_q.status)
    worker: str  # worker_id() of the worker process
    started: float  # epoch seconds

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> RunningInfo | None:
        if not data:
            return None
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None


def task_of(pending: Pending, config: Config) -> Task | None:
    """An unsaved Task for a package still in the broker; None if the package is not a valid one of ours."""
    try:
        package = unpack(pending.payload, config.package_limit)
    except PackageError:
        return None
    running = RunningInfo.decode(pending.running) if pending.state == LEASED else None
    task = Task(
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
    return task


def find(task_id: str, cluster: str | None = None) -> Task | None:
    """The unsaved Task of `task_id` while it is in the broker of `cluster`, else None."""
    config = get_config()
    pending = get_broker(cluster, config).lookup(task_id)
    return None if pending is None else task_of(pending, config)


def pending_tasks(cluster: str | None = None, limit: int = 100) -> list[Task]:
    """Unsaved Tasks for up to `limit` packages of the queue: running first, then in the order they go out."""
    config = get_config()
    found = (task_of(p, config) for p in get_broker(cluster, config).pending(limit))
    return [task for task in found if task is not None]
