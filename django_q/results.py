"""Reading what tasks gave: stored Task rows, tasks still in the broker, and results kept in the cache.

Re-exported by `django_q.tasks`, where users import them from. Every
function that reads the database also reads the cache with `cached=True`
(or when Q_CLUSTER["cached"] is set), as django-q2's do; the `*_cached`
functions read the cache of the queue of `broker` (the configured cluster's
by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import cached as cache_store
from .brokers.base import QueueBackend
from .conf import Config, get_config
from .exceptions import TaskTypeError
from .inflight import find
from .models import Task

__all__ = [
    "count_group", "count_group_cached", "delete_cached", "delete_group", "delete_group_cached", "fetch",
    "fetch_cached", "fetch_group", "fetch_group_cached", "result", "result_cached", "result_group",
    "result_group_cached",
]


def wait_for(get: Callable[[], Any], wait: int) -> Any:
    """Call `get` until it returns something, for up to `wait` ms (-1: forever)."""
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise TaskTypeError(f"wait must be a number of milliseconds (-1: forever), got {type(wait).__name__}: "
                            f"{wait!r}")
    value = get()
    deadline = None if wait < 0 else time.monotonic() + wait / 1000
    pause = 0.01
    while value is None and (deadline is None or time.monotonic() < deadline):
        time.sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.2)
        value = get()
    return value


def no_task(task_id: Any, cluster: Any = None) -> bool:
    """Whether `task_id` names no task (None); a TaskTypeError if it, or `cluster`, is not a str at all."""
    if cluster is not None and not isinstance(cluster, str):
        raise TaskTypeError(f"cluster must be a cluster name (a str) or None, got {type(cluster).__name__}: "
                            f"{cluster!r}")
    if task_id is None:
        return True
    if not isinstance(task_id, str):
        raise TaskTypeError(f"task_id must be a task id or name (a str), got {type(task_id).__name__}: {task_id!r}")
    return False


def check_group(group: Any) -> None:
    """A TaskTypeError unless `group` is a group name: None would match every task without a group."""
    if not isinstance(group, str):
        raise TaskTypeError(f"group must be a group name (a str), got {type(group).__name__}: {group!r}")


def _use_cache(cached: bool | int | None) -> bool:
    return bool(get_config().cached) if cached is None else bool(cached)


def result(task_id: str, wait: int = 0, cached: bool | int | None = None) -> Any:
    """The result of a task, or None until it ran; waits up to `wait` ms (-1: forever)."""
    if _use_cache(cached):
        return result_cached(task_id, wait)
    if no_task(task_id):
        return None
    task = wait_for(lambda: Task.get_task(task_id), wait)
    return task.result if task is not None else None


def fetch(task_id: str, wait: int = 0, in_flight: bool = False, cluster: str | None = None,
          cached: bool | int | None = None) -> Any:
    """The stored Task of an id or name once it finished, else None; waits up to `wait` ms (-1: forever).

    As in django-q, a task that has not finished gives None. With
    `in_flight`, a task still in the broker of `cluster` (the configured one
    by default) is returned too: an unsaved Task with `status` queued or
    running, `success` None and no result. A task_id of None gives None.
    """
    if _use_cache(cached):
        return fetch_cached(task_id, wait)
    if no_task(task_id, cluster):
        return None
    stored = wait_for(lambda: Task.get_task(task_id), wait)
    if stored is not None or not in_flight:
        return stored
    pending = find(task_id, cluster)
    # It may have finished between the two reads.
    return pending if pending is not None else Task.get_task(task_id)


def _count_wait(wait: int, count: int | None) -> int:
    """The wait of a group read: as in django-q, a `count` with no `wait` waits until that many are there."""
    return -1 if count is not None and wait == 0 else wait


def _group_tasks(group: str, failures: bool, wait: int, count: int | None) -> list | None:
    def get() -> list | None:
        tasks = Task.objects.filter(group=group)
        if not failures:
            tasks = tasks.filter(success=True)
        found = list(tasks.order_by("started"))
        if count is not None:
            return found if len(found) >= count else None
        return found or None

    return wait_for(get, _count_wait(wait, count))


def fetch_group(group: str, failures: bool = True, wait: int = 0, count: int | None = None,
                cached: bool | int | None = None) -> list | None:
    """The stored Tasks of a group (successes only unless `failures`), or None.

    With `count`, None until there are that many: waits up to `wait` ms for
    them, or, as in django-q, with no `wait`, until they are there.
    """
    check_group(group)
    if _use_cache(cached):
        return fetch_group_cached(group, failures, wait, count)
    return _group_tasks(group, failures, wait, count)


def result_group(group: str, failures: bool = False, wait: int = 0, count: int | None = None,
                 cached: bool | int | None = None) -> list | None:
    """The results of a group's tasks in start order, or None; `count` waits for that many (see fetch_group)."""
    check_group(group)
    if _use_cache(cached):
        return result_group_cached(group, failures, wait, count)
    tasks = _group_tasks(group, failures, wait, count)
    return None if tasks is None else [t.result for t in tasks]


def count_group(group: str, failures: bool = False, cached: bool | int | None = None) -> int:
    """How many tasks of a group succeeded (or failed, with `failures`)."""
    check_group(group)
    if _use_cache(cached):
        return count_group_cached(group, failures) or 0
    return Task.objects.filter(group=group, success=not failures).count()


def delete_group(group: str, tasks: bool = False, cached: bool | int | None = None) -> int | None:
    """Remove the group label from its tasks, or delete the tasks with `tasks=True`; with `cached`, forget them."""
    check_group(group)
    if _use_cache(cached):
        delete_group_cached(group)
        return None
    rows = Task.objects.filter(group=group)
    return rows.delete()[0] if tasks else rows.update(group=None)


# --- the cache (django-q2's `cached`): see django_q.cached ---


def _queue(broker: QueueBackend | None) -> tuple[Config, str]:
    """The settings and the queue name whose cache keys to read: `broker`'s, or the configured cluster's."""
    config = get_config()
    if broker is None:
        return config, config.name
    if not isinstance(broker, QueueBackend):
        raise TaskTypeError(f"broker must be a broker such as get_broker() returns, got {type(broker).__name__}")
    return config, broker.name


def result_cached(task_id: str, wait: int = 0, broker: QueueBackend | None = None) -> Any:
    """The result of a task kept in the cache, or None; waits up to `wait` ms (-1: forever)."""
    fields = _cached_fields(task_id, wait, broker)
    return None if fields is None else fields["result"]


def fetch_cached(task_id: str, wait: int = 0, broker: QueueBackend | None = None) -> Task | None:
    """A task kept in the cache, as an unsaved Task, or None; waits up to `wait` ms (-1: forever)."""
    fields = _cached_fields(task_id, wait, broker)
    return None if fields is None else Task(**fields)


def _cached_fields(task_id: str, wait: int, broker: QueueBackend | None) -> dict | None:
    if no_task(task_id):
        return None
    config, queue = _queue(broker)
    return wait_for(lambda: cache_store.load(config, queue, task_id), wait)


def _cached_group(group: str, failures: bool, wait: int, count: int | None,
                  broker: QueueBackend | None) -> list[dict] | None:
    check_group(group)
    config, queue = _queue(broker)

    def get() -> list[dict] | None:
        found = cache_store.load_group(config, queue, group)
        if found is None or (count is not None and len(found) < count):
            return None
        return [f for f in found if failures or f.get("success")]

    return wait_for(get, _count_wait(wait, count))


def result_group_cached(group: str, failures: bool = False, wait: int = 0, count: int | None = None,
                        broker: QueueBackend | None = None) -> list | None:
    """The results of a group's cached tasks in the order they were kept, or None; `count` waits for that many."""
    found = _cached_group(group, failures, wait, count, broker)
    return None if found is None else [f["result"] for f in found]


def fetch_group_cached(group: str, failures: bool = True, wait: int = 0, count: int | None = None,
                       broker: QueueBackend | None = None) -> list[Task] | None:
    """A group's cached tasks as unsaved Tasks, or None; `count` waits for that many."""
    found = _cached_group(group, failures, wait, count, broker)
    return None if found is None else [Task(**f) for f in found]


def count_group_cached(group: str, failures: bool = False, broker: QueueBackend | None = None) -> int | None:
    """How many cached tasks of a group succeeded (or failed, with `failures`); None if it has none."""
    check_group(group)
    config, queue = _queue(broker)
    found = cache_store.load_group(config, queue, group)
    return None if found is None else sum(1 for f in found if bool(f.get("success")) != failures)


def delete_group_cached(group: str, broker: QueueBackend | None = None) -> None:
    """Forget a group's cached tasks."""
    check_group(group)
    config, queue = _queue(broker)
    cache_store.delete_group(config, queue, group)


def delete_cached(task_id: str, broker: QueueBackend | None = None) -> bool:
    """Forget a cached task; whether it was there."""
    if no_task(task_id):
        return False
    config, queue = _queue(broker)
    return cache_store.delete(config, queue, task_id)
