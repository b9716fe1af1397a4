"""Django Q: a task queue for Django that never loses a task.

The task API (`async_task`, `result`, ...) is importable from here as well as
from `django_q.tasks`; it is loaded on first use so that importing the package
does not need Django's app registry.
"""

from typing import Any

__version__ = "0.1.0"

_TASK_API = frozenset(
    {
        "async_task",
        "async_many",
        "async_iter",
        "cancel",
        "async_chain",
        "result",
        "fetch",
        "result_group",
        "fetch_group",
        "count_group",
        "delete_group",
        "queue_size",
        "schedule",
        "result_cached",
        "fetch_cached",
        "delete_cached",
        "result_group_cached",
        "fetch_group_cached",
        "count_group_cached",
        "delete_group_cached",
        "AsyncTask",
        "Async",
        "Iter",
        "Chain",
    }
)


def __getattr__(name: str) -> Any:
    if name in _TASK_API:
        from . import tasks  # on first use: django_q.tasks needs the app registry, this package does not

        return getattr(tasks, name)
    raise AttributeError(f"module 'django_q' has no attribute {name!r}")
