"""The public task API: enqueue work for the cluster and read what it stored.

A thin façade: every enqueue goes through `django_q.enqueue.enqueue`, every
read through the models and, for tasks still in the broker, `django_q.inflight`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from django.utils import timezone

from .brokers import get_broker
from .brokers.base import REMOVED
from .conf import get_config
from .enqueue import OPTION_NAMES, enqueue, enqueue_link
from .exceptions import TaskTypeError
from .funcs import path_of
from .inflight import find
from .models import Schedule, Task
from .names import humanize, new_id
from .outcomes import Outcome
from .package import unpack
from .recorder import Recorder

__all__ = [
    "async_task", "async_many", "async_iter", "async_chain", "result", "fetch", "result_group", "fetch_group",
    "count_group", "delete_group", "queue_size", "cancel", "schedule",
]


def async_task(func: Callable | str, *args: Any, **kwargs: Any) -> str:
    """Enqueue `func(*args, **kwargs)` for the cluster and return the task id.

    Options are taken from the keyword arguments, or from `q_options={...}`
    when the task's own keyword arguments use those names:

    - hook, group, timeout, task_name, save, sync, ack_failure, cluster: as in django-q;
    - priority: -100 to 100, higher runs first (default 0);
    - run_after (an aware datetime, or a timedelta from now) or countdown
      (seconds): the broker holds the task back until then;
    - retries, retry_delay, retry_backoff, retry_on: run a failed task again,
      up to `retries` more times, `retry_delay * retry_backoff ** (n - 1)`
      seconds after failed attempt n, if it raised one of `retry_on`
      (exception classes or dotted paths; by default any Exception);
    - on_commit: enqueue only when the current transaction of the default
      database commits (Q_CLUSTER['on_commit'], False unless set); the id is
      returned at once.
    """
    q_options = kwargs.pop("q_options", None)
    if q_options is not None:
        options = dict(q_options)
    else:
        options = {k: kwargs.pop(k) for k in OPTION_NAMES & kwargs.keys()}
    return enqueue(func, [args], kwargs, options)[0]


def async_many(func: Callable | str, args_iter: Iterable[Any], **options: Any) -> list[str]:
    """Enqueue one task per item of `args_iter` in one broker round trip; returns their ids.

    An item is a tuple of positional arguments, or one argument. Options are
    those of `async_task` and apply to every task; each task's name is its own.
    """
    if options.get("task_name") is not None:
        raise TaskTypeError("async_many names each task itself; task_name is not an option here")
    return enqueue(func, _items(args_iter), None, options)


def async_iter(func: Callable | str, args_iter: Iterable[Any], **options: Any) -> str:
    """Enqueue one task per item of `args_iter`; the parent id's result is the list of results."""
    items = _items(args_iter)
    if not items:
        raise TaskTypeError("async_iter needs at least one item")
    parent = new_id()
    base = options.pop("task_name", None) or humanize(parent)
    enqueue(
        func, items, None, options,
        ids=[f"{parent[:24]}{i:08x}" for i in range(len(items))],
        names=[f"{base}-{i}" for i in range(len(items))],
        fields={"parent": parent, "iter_count": len(items)},
    )
    return parent


def async_chain(chain: list, group: str | None = None, cluster: str | None = None, sync: bool | None = None) -> str:
    """Run `[(func, args, kwargs), ...]` one after another; returns the group the results are in.

    A link's keyword arguments may carry options of async_task (countdown,
    priority, hook, ...) for that link.
    """
    if not chain:
        raise TaskTypeError("async_chain needs at least one task")
    links = [normalize_link(link) for link in chain]
    group = group or new_id()
    options = {"group": group, "cluster": cluster, **({"sync": sync} if sync is not None else {})}
    enqueue_link(links[0], links[1:], options)
    return group


def _items(args_iter: Iterable[Any]) -> list[tuple]:
    return [item if isinstance(item, tuple) else (item,) for item in args_iter]


def normalize_link(link: Any) -> tuple[Any, tuple, dict]:
    """A chain link as (func, args, kwargs) from a func, (func,), (func, args) or (func, args, kwargs)."""
    if not isinstance(link, (tuple, list)):
        link = (link,)
    func = link[0]
    args = tuple(link[1]) if len(link) > 1 and link[1] is not None else ()
    kwargs = dict(link[2]) if len(link) > 2 and link[2] is not None else {}
    return (func if isinstance(func, str) else path_of(func, "func"), args, kwargs)


def _wait(get: Callable[[], Any], wait: int) -> Any:
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


def _no_task(task_id: Any, cluster: Any = None) -> bool:
    """Whether `task_id` names no task (None); a TaskTypeError if it, or `cluster`, is not a str at all."""
    if cluster is not None and not isinstance(cluster, str):
        raise TaskTypeError(f"cluster must be a cluster name (a str) or None, got {type(cluster).__name__}: "
                            f"{cluster!r}")
    if task_id is None:
        return True
    if not isinstance(task_id, str):
        raise TaskTypeError(f"task_id must be a task id or name (a str), got {type(task_id).__name__}: {task_id!r}")
    return False


def _check_group(group: Any) -> None:
    if not isinstance(group, str):
        raise TaskTypeError(f"group must be a group name (a str), got {type(group).__name__}: {group!r}")


def fetch(task_id: str, wait: int = 0, cluster: str | None = None) -> Any:
    """The Task of an id or name: the stored one once it finished, waiting up to `wait` ms for that.

    Before it finished, a task still in the broker of `cluster` is returned
    unsaved, with `status` queued or running (and `success` None); a task
    that is nowhere gives None, as does a task_id of None.
    """
    if _no_task(task_id, cluster):
        return None
    stored = _wait(lambda: Task.get_task(task_id), wait)
    if stored is not None:
        return stored
    in_flight = find(task_id, cluster)
    # It may have finished between the two reads.
    return in_flight if in_flight is not None else Task.get_task(task_id)


def cancel(task_id: str, cluster: str | None = None) -> bool:
    """Cancel a task that has not finished: False if it is not in the broker of `cluster`.

    A queued (or deferred) task is removed and recorded as cancelled at once.
    A running one is asked to stop: its worker raises TaskCancelled inside it,
    and is killed after Q_CLUSTER['cancel_grace'] seconds if it does not stop;
    the cluster then records it as cancelled. A cancelled task's hook is called.
    """
    if _no_task(task_id, cluster):
        return False
    config = get_config()
    done = get_broker(cluster, config).cancel(task_id)
    if done is None:
        return False
    if done.outcome == REMOVED:
        task = unpack(done.pending.payload, config.package_limit)
        now = time.time()
        reason = "cancelled before it started"
        outcome = Outcome(done.pending.id, task, False, reason, now, now, done.pending.attempts,
                          task.cluster or config.name, cancelled=True)
        Recorder(config).record([outcome])  # a cancelled task's chain does not go on
    return True


def result(task_id: str, wait: int = 0) -> Any:
    """The result of a task, or None until it ran; waits up to `wait` ms (-1: forever)."""
    if _no_task(task_id):
        return None
    task = _wait(lambda: Task.get_task(task_id), wait)
    return task.result if task is not None else None


def _group_tasks(group: str, failures: bool, wait: int, count: int | None) -> list | None:
    _check_group(group)
    def get() -> list | None:
        tasks = Task.objects.filter(group=group)
        if not failures:
            tasks = tasks.filter(success=True)
        found = list(tasks.order_by("started"))
        if count is not None:
            return found if len(found) >= count else None
        return found or None

    return _wait(get, wait)


def fetch_group(group: str, failures: bool = True, wait: int = 0, count: int | None = None) -> list | None:
    """The stored Tasks of a group (successes only unless `failures`), or None."""
    return _group_tasks(group, failures, wait, count)


def result_group(group: str, failures: bool = False, wait: int = 0, count: int | None = None) -> list | None:
    """The results of a group's tasks in start order, or None; `count` waits for that many."""
    tasks = _group_tasks(group, failures, wait, count)
    return None if tasks is None else [t.result for t in tasks]


def count_group(group: str, failures: bool = False) -> int:
    """How many tasks of a group succeeded (or failed, with `failures`)."""
    _check_group(group)
    return Task.objects.filter(group=group, success=not failures).count()


def delete_group(group: str, tasks: bool = False) -> int:
    """Remove the group label from its tasks, or delete the tasks with `tasks=True`."""
    _check_group(group)
    rows = Task.objects.filter(group=group)
    return rows.delete()[0] if tasks else rows.update(group=None)


def queue_size(cluster: str | None = None) -> int:
    """Tasks waiting in the broker of `cluster` (the configured cluster by default)."""
    return get_broker(cluster).size()


def schedule(
    func: Callable | str,
    *args: Any,
    name: str | None = None,
    hook: Callable | str | None = None,
    schedule_type: str = "O",
    minutes: int | None = None,
    repeats: int = -1,
    next_run: Any = None,
    cron: str | None = None,
    cluster: str | None = None,
    **kwargs: Any,
) -> Any:
    """Create and return a Schedule; its args and kwargs are stored as literal text."""
    sched = Schedule(
        name=name,
        func=path_of(func, "func"),
        hook=None if hook is None else path_of(hook, "hook"),
        args=", ".join(repr(a) for a in args) or None,
        kwargs=", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or None,
        schedule_type=schedule_type,
        minutes=minutes,
        repeats=repeats,
        next_run=next_run or timezone.now(),
        cron=cron,
        cluster=cluster,
    )
    sched.full_clean()
    sched.save()
    return sched
