"""The public task API: enqueue work for the cluster and read what it stored.

A thin façade: every enqueue goes through `django_q.enqueue.enqueue`, every
read through `django_q.results` (re-exported here). The classes `AsyncTask`
(alias `Async`), `Iter` and `Chain` are django-q2's, on top of the same calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from django.utils import timezone

from .brokers import get_broker
from .brokers.base import REMOVED, QueueBackend
from .conf import get_config
from .context import current_task
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
    "Async", "AsyncTask", "Chain", "Iter", "async_chain", "async_iter", "async_many", "async_task", "cancel",
    "count_group", "count_group_cached", "current_task", "delete_cached", "delete_group", "delete_group_cached",
    "fetch", "fetch_cached", "fetch_group", "fetch_group_cached", "queue_size", "result", "result_cached",
    "result_group", "result_group_cached", "schedule",
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
      returned at once;
    - unique: True (the key is the function with its args and kwargs) or a
      key of your own: while a task of that key is queued or running on the
      queue, return its id and send nothing (see django_q.unique).
    """
    if not kwargs:  # most calls: no options, no keyword arguments
        return enqueue(func, [args])[0]
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
    With unique=True each task has its own key from its arguments (one round
    trip per task then), and a task held back gets its holder's id.
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
    # The parts go to the database, where they are folded into the list; `cached`
    # (Q_CLUSTER["cached"] by default, which result() then reads) is for the list.
    cached = options.pop("cached", None)
    cached = get_config().cached if cached is None else cached
    if cached:
        options.setdefault("iter_cached", cached)
    options["cached"] = False
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
    if no_task(task_id, cluster):
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


# --- django-q2's classes ---


def _default_cached(cached: bool | int | None) -> bool | int:
    return get_config().cached if cached is None else cached


class _Sent:
    """What AsyncTask and Iter share: the result and the stored Task of the id `run()` gave."""

    id: str
    started: bool
    cached: bool | int

    def result(self, wait: int = 0) -> Any:
        """Its result once it ran (an Iter's: the list of results), None before or before `run()`; waits up
        to `wait` ms."""
        if self.started:
            return result(self.id, wait=wait, cached=self.cached)
        return None

    def fetch(self, wait: int = 0) -> Any:
        """Its stored Task once it ran (an Iter's holds the list of results), None before or before `run()`;
        waits up to `wait` ms."""
        if self.started:
            return fetch(self.id, wait=wait, cached=self.cached)
        return None


class AsyncTask(_Sent):
    """One task to run, built first and sent by `run()`: django-q2's class API over async_task.

    The keyword arguments are those of async_task (options included, or in
    `q_options`); `broker`, `sync`, `save`, `hook`, `group` and `cached` can
    be read and set as attributes until it runs again.
    """

    def __init__(self, func: Callable | str, *args: Any, **kwargs: Any) -> None:
        self.id = ""
        self.started = False
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def _get_option(self, key: str, default: Any = None) -> Any:
        return self.kwargs.get("q_options", self.kwargs).get(key, default)

    def _set_option(self, key: str, value: Any) -> None:
        self.kwargs.get("q_options", self.kwargs)[key] = value
        self.started = False

    broker = property(lambda self: self._get_option("broker"), lambda self, v: self._set_option("broker", v))
    sync = property(lambda self: self._get_option("sync"), lambda self, v: self._set_option("sync", v))
    save = property(lambda self: self._get_option("save"), lambda self, v: self._set_option("save", v))
    hook = property(lambda self: self._get_option("hook"), lambda self, v: self._set_option("hook", v))
    group = property(lambda self: self._get_option("group"), lambda self, v: self._set_option("group", v))
    cached = property(
        lambda self: self._get_option("cached", get_config().cached), lambda self, v: self._set_option("cached", v)
    )

    def run(self) -> str:
        """Enqueue the task; its id."""
        self.id = async_task(self.func, *self.args, **self.kwargs)
        self.started = True
        return self.id

    def result_group(self, failures: bool = False, wait: int = 0, count: int | None = None) -> list | None:
        """The results of its group (see result_group); None without a group or before `run()`."""
        if self.started and self.group:
            return result_group(self.group, failures=failures, wait=wait, count=count, cached=self.cached)
        return None

    def fetch_group(self, failures: bool = True, wait: int = 0, count: int | None = None) -> list | None:
        """The Tasks of its group (see fetch_group); None without a group or before `run()`."""
        if self.started and self.group:
            return fetch_group(self.group, failures=failures, wait=wait, count=count, cached=self.cached)
        return None


Async = AsyncTask  # django-q's name


class Iter(_Sent):
    """One task per set of arguments, their results one list: django-q2's class API over async_iter."""

    def __init__(self, func: Callable | str | None = None, args: list | None = None, kwargs: dict | None = None,
                 cached: bool | int | None = None, sync: bool | None = None,
                 broker: QueueBackend | None = None) -> None:
        self.func = func
        self.args = args or []
        self.kwargs = kwargs or {}  # options of async_iter
        self.id = ""
        self.broker = broker or get_broker()
        self.cached = _default_cached(cached)
        self.sync = sync
        self.started = False

    def append(self, *args: Any) -> int:
        """Add a set of arguments (one task); the number of sets."""
        self.args.append(args)
        self.started = False
        return self.length()

    def run(self) -> str:
        """Enqueue a task per set of arguments; the id the list of results is saved under."""
        if self.func is None:
            raise TaskTypeError("Iter.run() needs a func: Iter(func, args)")
        options = {**self.kwargs, "cached": self.cached, "sync": self.sync, "broker": self.broker}
        self.id = async_iter(self.func, self.args, **options)
        self.started = True
        return self.id

    def length(self) -> int:
        """How many sets of arguments (tasks) there are."""
        return len(self.args)


class Chain:
    """Tasks that run one after another in one group: django-q2's class API over async_chain."""

    def __init__(self, chain: list | None = None, group: str | None = None, cached: bool | int | None = None,
                 sync: bool | None = None, broker: QueueBackend | None = None) -> None:
        self.chain = chain or []
        self.group = group or ""
        self.broker = broker or get_broker()
        self.cached = _default_cached(cached)
        self.sync = sync
        self.started = False

    def append(self, func: Callable | str, *args: Any, **kwargs: Any) -> int:
        """Add a task (arguments and options as async_task's); after a run, its group's results are let go first.

        Returns the length of the chain.
        """
        self.chain.append((func, args, kwargs))
        if self.started:
            delete_group(self.group, cached=self.cached)
            self.started = False
        return self.length()

    def run(self) -> str:
        """Enqueue the first task (each finished one enqueues the next); the group of their results."""
        self.group = async_chain(self.chain[:], group=self.group, cached=self.cached, sync=self.sync,
                                 broker=self.broker)
        self.started = True
        return self.group

    def result(self, wait: int = 0) -> list | None:
        """The results once every task ran (None before, or before `run()`); waits up to `wait` ms."""
        if self.started:
            return result_group(self.group, wait=wait, count=self.length(), cached=self.cached)
        return None

    def fetch(self, failures: bool = True, wait: int = 0) -> list | None:
        """The Tasks once every task ran (None before, or before `run()`); waits up to `wait` ms."""
        if self.started:
            return fetch_group(self.group, failures=failures, wait=wait, count=self.length(), cached=self.cached)
        return None

    def current(self) -> int | None:
        """How many tasks of the chain succeeded so far; None before `run()`."""
        if not self.started:
            return None
        return count_group(self.group, cached=self.cached)

    def length(self) -> int:
        """How many tasks the chain has."""
        return len(self.chain)
