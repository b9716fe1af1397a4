"""Running a `django.tasks` task (Django 6+) in a worker: its context, its signals, its result.

The backend (`django_q.tasks_backend`) turns `Task.enqueue()` into a Django Q
package that carries `django` (backend alias, queue name); `django_q.runner`
hands such a package here.
"""

from __future__ import annotations

import traceback
from typing import Any

from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task as DjangoTask, TaskContext, TaskResult, TaskResultStatus
from django.tasks import task_backends
from django.tasks.base import TaskError
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from .exceptions import DjangoQError
from .names import worker_id
from .package import TaskPackage
from .rows import epoch_datetime

#: the exception class path given for a failure that raised nothing in the task (timeout, lost worker)
LOST = "django_q.exceptions.WorkerLost"


def earlier_attempts(history: Any) -> tuple[list[TaskError], list[str]]:
    """The errors and worker ids of the failed attempts kept in a task's history."""
    history = list(history or ())
    errors = [TaskError(exception_class_path=h.get("exception") or LOST, traceback=h.get("traceback") or "")
              for h in history]
    return errors, [h["worker"] for h in history if h.get("worker")]


def run_task(obj: Any, package: TaskPackage, attempt: int) -> Any:
    """Run a django.tasks task in a worker: its context, its signals, Django's JSON rule for the value.

    An exception propagates (after task_finished is sent) for the worker to record.
    """
    if not isinstance(obj, DjangoTask):
        raise DjangoQError(f"{package.func_name} is not a django.tasks task (a function decorated with @task)")
    info = package.django or {}
    backend = task_backends[info.get("backend", "default")]
    task = obj.using(priority=package.priority, queue_name=info.get("queue", DEFAULT_TASK_QUEUE_NAME))
    now = timezone.now()
    errors, workers = earlier_attempts(package.history)
    result: TaskResult[..., Any] = TaskResult(
        task=task,
        id=package.id,
        status=TaskResultStatus.RUNNING,
        enqueued_at=epoch_datetime(package.enqueued),
        started_at=now,
        finished_at=None,
        last_attempted_at=now,
        args=list(package.args),
        kwargs=dict(package.kwargs),
        backend=backend.alias,
        errors=errors,
        worker_ids=[*workers, worker_id()],
    )
    task_started.send(type(backend), task_result=result)
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
        value = normalize_json(value)
    except BaseException as exc:
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        cls = type(exc)
        result.errors.append(TaskError(exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
                                       traceback="".join(traceback.format_exception(exc))))
        task_finished.send(type(backend), task_result=result)
        raise
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "_return_value", value)
    task_finished.send(type(backend), task_result=result)
    return value
