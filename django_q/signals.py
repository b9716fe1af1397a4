"""Signals sent around a task's life. Receivers get keyword arguments only.

As in django-q2, `task` is a dict: `task["id"]`, `task["name"]`,
`task["func"]`, `task["args"]`, `task["kwargs"]`, `task["started"]`, the
options given (`hook`, `group`, `save`, `sync`, `cached`, `ack_failure`,
`iter_count`, `iter_cached`, `chain`, `cluster`, `timeout`: a key only when
set) and, after the run, `result`, `success` and `stopped`. It is a
`TaskInfo`, whose attributes are those of the object it was made from (the
TaskPackage before the run, the Task after), so `task.id`, `task.status` or
`task.time_taken()` work too. Changing the dict changes nothing that runs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from .rows import epoch_datetime

#: before a task is sent to the broker: task (a TaskInfo of the TaskPackage)
pre_enqueue = Signal()
#: in the worker, before the function is called: func (the callable), task (a TaskInfo of the TaskPackage)
pre_execute = Signal()
#: in the pusher's saver thread, after the result is saved (or cached): task (a TaskInfo of the Task)
post_execute = Signal()
#: in the worker, after the function returned or raised: func, task (a TaskInfo of the TaskPackage, with
#: result, success and stopped); django-q2's
post_execute_in_worker = Signal()
#: after a failed task is saved (in the cluster; in the caller in sync mode): task (the Task model instance);
#: a failure is a task that raised, could not be imported, passed its timeout, lost its worker or reached
#: max_attempts (not a cancelled task, not an attempt its retry policy runs again)
task_failed = Signal()
#: in a cluster process once it started: proc_name (str)
post_spawn = Signal()

_OPTIONS = ("hook", "group", "save", "ack_failure", "cluster", "timeout")

logger = logging.getLogger("django_q")


def send_task_failed(task: Any) -> None:
    """Send task_failed for a failed Task row; a receiver that raises is logged, never raised."""
    try:
        task_failed.send(sender="django_q", task=task)
    except Exception:
        logger.exception("a task_failed receiver failed for task %s (%s)", task.name, task.id)


class TaskInfo(dict):
    """A task as django-q2's signals pass it, a dict, whose attributes are those of `source`."""

    __slots__ = ("source",)

    def __init__(self, source: Any, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self.source = source

    def __getattr__(self, name: str) -> Any:
        # Called only for names a dict does not have: a field of the package or the row.
        if name == "source":  # not set yet (a copy under construction): no endless lookup
            raise AttributeError(name)
        return getattr(self.source, name)

    def __reduce__(self) -> tuple:
        return (TaskInfo, (self.source, dict(self)))


def package_info(package: Any, sync: bool | None = None) -> TaskInfo:
    """The TaskInfo of a TaskPackage, before it runs."""
    fields: dict[str, Any] = {
        "id": package.id,
        "name": package.name,
        "func": package.func,
        "args": package.args,
        "kwargs": package.kwargs,
        "started": epoch_datetime(package.enqueued),  # django-q2's "started" is the enqueue time
    }
    for key in _OPTIONS:
        value = getattr(package, key)
        if value is not None:
            fields[key] = value
    if sync is not None:
        fields["sync"] = sync
    if package.cached:
        fields["cached"] = package.cached
    if package.chain:
        fields["chain"] = [list(link) for link in package.chain]
    if package.parent:  # an iter's part: django-q2 names the iter by its group
        fields.update(group=package.parent, iter_count=package.iter_count)
        if package.iter_cached:
            fields["iter_cached"] = package.iter_cached
    return TaskInfo(package, fields)


def row_info(row: Any) -> TaskInfo:
    """The TaskInfo of a finished Task."""
    fields = {
        name: getattr(row, name)
        for name in ("id", "name", "func", "hook", "args", "kwargs", "group", "cluster", "started", "stopped",
                     "result", "success", "attempt_count")
    }
    return TaskInfo(row, fields)
