"""The public task API: enqueue work for the cluster and read what it stored.

A thin façade: every enqueue goes through `django_q.enqueue.enqueue`, every
read through `django_q.results` (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from django.utils import timezone

from .brokers import get_broker
from .brokers.base import REMOVED, QueueBackend
from .conf import get_config
from .enqueue import OPTION_NAMES, enqueue, enqueue_link, normalize_link
from .exceptions import TaskTypeError
from .funcs import path_of
from .models import Schedule
from .names import humanize, new_id
from .outcomes import Outcome
from .package import unpack
from .recorder import Recorder
from .results import (
    count_group,
    count_group_cached,
    delete_cached,
    delete_group,
    delete_group_cached,
    fetch,
    fetch_cached,
    fetch_group,
    fetch_group_cached,
    no_task,
    result,
    result_cached,
    result_group,
    result_group_cached,
)

__all__ = [
    "async_chain", "async_iter", "async_many", "async_task", "cancel",
    "count_group", "count_group_cached", "delete_cached", "delete_group", "delete_group_cached", "fetch",
    "fetch_cached", "fetch_group", "fetch_group_cached", "queue_size", "result", "result_cached", "result_group",
    "result_group_cached", "schedule",
]


def async_task(func: Callable | str, *args: Any, **kwargs: Any) -> str:
    """Enqueue `func(*args, **kwargs)` for the cluster and return the task id.

    Options are taken from the keyword arguments, or from `q_options={...}`
    when the task's own keyword arguments use those names:

    - hook, group, timeout, task_name, save, sync, ack_failure, cluster: as in django-q;
    - broker: a broker (what get_broker() returns) to send through instead of the cluster's own;
    - cached: keep the result in Django's cache instead of the database (True:
      until evicted, or seconds; Q_CLUSTER['cached'] by default); read it with
      result_cached / fetch_cached, or result / fetch with cached=True;
    - chain: [(func, args, kwargs), ...] to run one after another once this task finished;
    - iter_count (with group) and iter_cached: this task is one of iter_count
      parts whose results are saved as one list under the id `group`, in the
      cache with iter_cached (what async_iter does);
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
    """Enqueue one task per item of `args_iter`; the parent id's result is the list of results.

    Options are those of async_task (or `q_options={...}`); with `cached`, the
    list is kept in the cache instead of the database.
    """
    if "q_options" in options:
        options = dict(options["q_options"] or {})
    items = _items(args_iter)
    if not items:
        raise TaskTypeError("async_iter needs at least one item")
    if options.get("cached"):
        options["iter_cached"] = options.pop("cached")
    options.pop("cached", None)  # the parts go to the database, where they are folded into the list
    parent = new_id()
    base = options.pop("task_name", None) or humanize(parent)
    enqueue(
        func, items, None, options,
        ids=[f"{parent[:24]}{i:08x}" for i in range(len(items))],
        names=[f"{base}-{i}" for i in range(len(items))],
        fields={"parent": parent, "iter_count": len(items)},
    )
    return parent


def async_chain(chain: list, group: str | None = None, cached: bool | int | None = None, sync: bool | None = None,
                broker: QueueBackend | None = None, cluster: str | None = None) -> str:
    """Run `[(func, args, kwargs), ...]` one after another; returns the group the results are in.

    A link's keyword arguments may carry options of async_task (countdown,
    priority, hook, ...) for that link. `cached`, `sync`, `broker` and
    `cluster` apply to every link (`broker` to the first: the cluster
    enqueues the others).
    """
    if not chain:
        raise TaskTypeError("async_chain needs at least one task")
    links = [normalize_link(link) for link in chain]
    group = group or new_id()
    given = {"cached": cached, "sync": sync, "broker": broker}
    options = {"group": group, "cluster": cluster, **{k: v for k, v in given.items() if v is not None}}
    enqueue_link(links[0], links[1:], options)
    return group


def _items(args_iter: Iterable[Any]) -> list[tuple]:
    return [item if isinstance(item, tuple) else (item,) for item in args_iter]


def cancel(task_id: str, cluster: str | None = None) -> bool:
    """Cancel a task that has not finished: False if it is not in the broker of `cluster`.

    A queued (or deferred) task is removed and recorded as cancelled at once.
    A running one is asked to stop: its worker raises TaskCancelled inside it,
    and is killed after Q_CLUSTER['cancel_grace'] seconds if it does not stop;
    the cluster then records it as cancelled. A cancelled task's hook is called.
    """
    if no_task(task_id):
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


def queue_size(cluster: str | QueueBackend | None = None, broker: QueueBackend | None = None) -> int:
    """Tasks waiting in the broker of `cluster` (the configured cluster by default), or in `broker`.

    django-q2 takes the broker as the first argument: a broker given there counts too.
    """
    if isinstance(cluster, QueueBackend):
        cluster, broker = None, cluster
    if broker is not None:
        if not isinstance(broker, QueueBackend):
            raise TaskTypeError(f"broker must be a broker such as get_broker() returns, got {type(broker).__name__}")
        return broker.size()
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

