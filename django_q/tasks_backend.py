"""Django's own tasks API (`django.tasks`, Django 6+) run by the Django Q cluster.

    TASKS = {
        "default": {
            "BACKEND": "django_q.tasks_backend.DjangoQBackend",
            "QUEUES": ["default", "reports"],      # queue "default" is Q_CLUSTER's cluster,
            "OPTIONS": {                           # any other queue the cluster of that name
                "CLUSTERS": {"reports": "batch"},  # or name the cluster of a queue
                "ENQUEUE_ON_COMMIT": False,        # default: Q_CLUSTER["on_commit"], itself False
                "RETRIES": 0, "RETRY_DELAY": 0, "RETRY_BACKOFF": 1, "RETRY_ON": [],
            },
        }
    }

A task declared with `@task` and `.enqueue()`d becomes an ordinary Django Q
package: signed, leased, run by a worker, its result saved as a `Task` row.
`get_result` reads that row, or the broker while the task is queued or
running. Arguments and return values follow Django's JSON rule
(`normalize_json`): tuples come back as lists, and a value JSON cannot carry
is refused at `enqueue` (arguments) or makes the task fail (return value).

A task's own retry policy, over the backend's OPTIONS, comes from
`retry_policy` put under `@task`:

    @task(priority=10)
    @retry_policy(retries=3, retry_delay=1, retry_backoff=2, retry_on=[ConnectionError])
    def refresh_feed(url): ...

The signals `task_enqueued` (in the enqueuing process), `task_started` and
`task_finished` (in the worker, once per attempt) are sent with this backend's
class as sender.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.core.checks import Error
from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task as DjangoTask, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils.json import normalize_json

from .conf import get_config
from .djtasks import LOST, earlier_attempts
from .enqueue import enqueue
from .exceptions import ConfigurationError
from .funcs import resolve
from .models import Task
from .names import new_id
from .results import fetch
from .rows import epoch_datetime

RETRY_ATTRIBUTE = "django_q_retry_policy"
#: the exception class path given for a cancelled task
CANCELLED = "django_q.exceptions.TaskCancelled"


def retry_policy(
    retries: int = 0, retry_delay: float = 0.0, retry_backoff: float | bool = 1.0, retry_on: Any = ()
) -> Callable[[Callable], Callable]:
    """Give a task function its own retry policy; put it under `@task`."""
    policy = {"retries": retries, "retry_delay": retry_delay, "retry_backoff": retry_backoff, "retry_on": retry_on}

    def mark(func: Callable) -> Callable:
        setattr(func, RETRY_ATTRIBUTE, policy)
        return func

    return mark


class DjangoQBackend(BaseTaskBackend):
    """Runs `django.tasks` tasks on the Django Q cluster, through its broker and its result store."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.clusters: dict[str, str] = dict(self.options.get("CLUSTERS", {}))
        self.on_commit: bool | None = self.options.get("ENQUEUE_ON_COMMIT")
        self.retry_options = {
            "retries": self.options.get("RETRIES", 0),
            "retry_delay": self.options.get("RETRY_DELAY", 0.0),
            "retry_backoff": self.options.get("RETRY_BACKOFF", 1.0),
            "retry_on": self.options.get("RETRY_ON", ()),
        }

    def cluster_of(self, queue_name: str) -> str:
        """The Django Q cluster (queue) that runs tasks of `queue_name`."""
        if queue_name in self.clusters:
            return self.clusters[queue_name]
        return get_config().name if queue_name == DEFAULT_TASK_QUEUE_NAME else queue_name

    def queue_of(self, cluster: str | None) -> str:
        """The inverse of cluster_of, for results read back."""
        for queue, name in self.clusters.items():
            if name == cluster:
                return queue
        if cluster is None or cluster == get_config().name:
            return DEFAULT_TASK_QUEUE_NAME
        return cluster if cluster in self.queues else DEFAULT_TASK_QUEUE_NAME

    def enqueue(self, task: DjangoTask, args: Any, kwargs: Any) -> TaskResult:
        """Send the task to its cluster; returns its result, READY."""
        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        config = get_config()
        options = {
            **self.retry_options,
            **getattr(task.func, RETRY_ATTRIBUTE, {}),
            "priority": task.priority,
            "cluster": self.cluster_of(task.queue_name),
            "run_after": task.run_after,
        }
        django = {"backend": self.alias, "queue": task.queue_name, "context": task.takes_context}
        task_id, now = new_id(), time.time()
        result: TaskResult[..., Any] = TaskResult(
            task=task,
            id=task_id,
            status=TaskResultStatus.READY,
            enqueued_at=epoch_datetime(now),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        options["on_commit"] = self.on_commit
        enqueue(task.module_path, [tuple(args)], kwargs, options, ids=[task_id], fields={"django": django},
                config=config, after=lambda: task_enqueued.send(type(self), task_result=result), enqueued=now)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The result of a task: from its stored row once it finished, else from the broker."""
        row = None
        if _is_id(result_id):
            clusters = sorted({self.cluster_of(q) for q in self.queues} or {get_config().name})
            # The stored row once it finished, else the task in the broker of its queue's cluster.
            row = next((found for c in clusters if (found := fetch(result_id, in_flight=True, cluster=c))), None)
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        return self._result_of(row)

    def _result_of(self, row: Any) -> TaskResult:
        try:
            task = resolve(row.func)
        except ImportError:
            raise TaskResultDoesNotExist(f"{row.id}: its task {row.func} cannot be imported") from None
        if not isinstance(task, DjangoTask):
            raise TaskResultDoesNotExist(f"{row.id} is a Django Q task of {row.func}, not a django.tasks task")
        task = task.using(
            priority=row.priority,
            queue_name=self.queue_of(row.cluster),
            run_after=getattr(row, "due", None),
        )
        errors, workers = earlier_attempts(row.history)
        if row.status in (Task.FAILURE, Task.CANCELLED):
            path = CANCELLED if row.status == Task.CANCELLED else row.exception or LOST
            errors.append(TaskError(exception_class_path=path, traceback=str(row.result or "")))
        workers += [row.worker] if row.worker else []
        result: TaskResult[..., Any] = TaskResult(
            task=task,
            id=row.id,
            status=_STATUS[row.status],
            enqueued_at=row.enqueued,
            started_at=row.started,
            finished_at=row.stopped,
            last_attempted_at=row.started,
            args=list(row.args or ()),
            kwargs=dict(row.kwargs or {}),
            backend=self.alias,
            errors=errors,
            worker_ids=workers,
        )
        if row.status == Task.SUCCESS:
            object.__setattr__(result, "_return_value", row.result)
        return result

    def check(self, **kwargs: Any) -> list:
        errors = list(super().check(**kwargs))
        if not apps.is_installed("django_q"):
            errors.append(Error("DjangoQBackend needs 'django_q' in INSTALLED_APPS", id="django_q.E010"))
        try:
            get_config()
        except ConfigurationError as exc:
            errors.append(Error(str(exc), id="django_q.E011"))
        return errors


_STATUS = {
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "success": TaskResultStatus.SUCCESSFUL,
    "failure": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)
