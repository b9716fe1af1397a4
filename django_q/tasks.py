"""The public task API: enqueue work for the cluster and read what it stored."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import signals
from .brokers import get_broker
from .brokers.base import PRIORITY_MAX, PRIORITY_MIN
from .conf import Config, get_config
from .exceptions import PackageTooLarge, TaskTypeError
from .names import humanize, new_id, new_ids
from .package import TaskPackage, callable_path, copy_fields, pack, pack_copy, pack_many

OPTION_NAMES = frozenset(
    {
        "hook", "group", "timeout", "task_name", "save", "sync", "ack_failure", "cluster", "q_options",
        # the task lifecycle: rank, defer, retry, and wait for the transaction
        "priority", "run_after", "countdown", "retries", "retry_delay", "retry_backoff", "retry_on", "on_commit",
    }
)


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
        unknown = set(options) - OPTION_NAMES
        if unknown:
            raise TaskTypeError(f"q_options has unknown option(s): {', '.join(sorted(unknown))}")
    else:
        options = {k: kwargs.pop(k) for k in OPTION_NAMES & kwargs.keys()}
    config = get_config()
    if not options and not config.sync and (isinstance(func, str) or inspect.isfunction(func)):
        if not signals.pre_enqueue.has_listeners("django_q"):  # receivers of every sender, or of ours
            return _send_plain(func, args, kwargs, config)
    task = build_package(func, args, kwargs, options, config)
    sync = options.get("sync")
    if sync if sync is not None else config.sync:
        run_sync(task, config)
    else:
        send([task], config, delay_of(options), options.get("on_commit"))
    return task.id


# What the packages of a function called without options share (package.copy_fields),
# by function (a dotted path or a plain function), for the configuration in
# `_plain_config`: checked once, then each call serializes its own fields onto it.
_plain: dict[Any, dict[str, Any]] = {}
_plain_config: Config | None = None
PLAIN_MAX = 256  # functions remembered; the whole table starts over beyond


def _send_plain(func: Callable | str, args: tuple, kwargs: dict, config: Config) -> str:
    """async_task without options, no sync run and no pre_enqueue receiver to show the package to:
    the package is serialized straight from its function's shared fields and never made."""
    global _plain_config
    if _plain_config is not config or len(_plain) >= PLAIN_MAX:
        _plain.clear()
        _plain_config = config
    base = _plain.get(func)
    if base is None:
        base = _plain[func] = copy_fields(TaskPackage(id="", name="", **package_fields(func, {}, config)))
    task_id = new_id()
    name = humanize(task_id)
    more: dict[str, Any] = {"enqueued": time.time()}
    if kwargs:
        more["kwargs"] = kwargs
    try:
        payload = pack_copy(base, task_id, name, args, config.serializer, config.compress, config.package_limit, **more)
    except PackageTooLarge:
        raise
    except Exception:
        _pack(build_package(func, args, kwargs, {}, config, id=task_id), config)  # names the task and its function
        raise
    _when_committed(lambda: get_broker(None, config).enqueue(payload, 0, 0.0, task_id), None, config)
    return task_id


def async_many(func: Callable | str, args_iter: Iterable[Any], **options: Any) -> list[str]:
    """Enqueue one task per item of `args_iter` in one broker round trip; returns their ids.

    An item is a tuple of positional arguments, or one argument. Options are
    those of `async_task` and apply to every task; each task's name is its own.
    """
    config = get_config()
    if options.get("task_name") is not None:
        raise TaskTypeError("async_many names each task itself; task_name is not an option here")
    common = package_fields(func, options, config)  # checked once for every task
    # The packages differ in id, name and arguments only: they are serialized
    # straight from the template's fields, and made only for whoever looks at them.
    template = TaskPackage(id="", name="", enqueued=time.time(), **common)
    args = [item if isinstance(item, tuple) else (item,) for item in args_iter]
    ids = new_ids(len(args))
    names = [humanize(task_id) for task_id in ids]

    def tasks() -> Iterator[TaskPackage]:
        for task_id, name, task_args in zip(ids, names, args):
            yield replace(template, id=task_id, name=name, args=task_args)

    sync = options.get("sync")
    if sync if sync is not None else config.sync:
        for task in tasks():
            run_sync(task, config)
        return ids
    delay = delay_of(options)
    try:
        payloads = pack_many(template, ids, names, args, config.serializer, config.compress, config.package_limit)
    except Exception:
        for task in tasks():  # name the first that fails, as async_task does
            _pack(task, config)
        raise

    def go() -> None:
        if signals.pre_enqueue.has_listeners("django_q"):  # receivers of every sender, or of ours
            for task in tasks():
                signals.pre_enqueue.send(sender="django_q", task=task)
        get_broker(template.cluster, config).enqueue_many(payloads, template.priority, delay, ids)

    if ids:
        _when_committed(go, options.get("on_commit"), config)
    return ids


def send(
    tasks: list[TaskPackage],
    config: Config,
    delay: float,
    on_commit: bool | None,
    after: Callable[[], Any] | None = None,
) -> None:
    """Enqueue packed tasks now, or when the default database's transaction commits; then call `after`."""
    payloads = [_pack(task, config) for task in tasks]  # a task that does not serialize fails here, now

    def go() -> None:
        enqueue_packages(tasks, config, delay, payloads)
        if after is not None:
            after()

    _when_committed(go, on_commit, config)


def _when_committed(go: Callable[[], Any], on_commit: bool | None, config: Config) -> None:
    """Call `go` now, or when the default database's transaction commits (`on_commit`, else the setting)."""
    if on_commit if on_commit is not None else config.on_commit:
        transaction.on_commit(go)
    else:
        go()


def delay_of(options: dict[str, Any]) -> float:
    """Seconds the broker holds a task back, from `run_after` or `countdown`."""
    run_after, countdown = options.get("run_after"), options.get("countdown")
    if run_after is not None and countdown is not None:
        raise TaskTypeError("give run_after or countdown, not both")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, (int, float)) or countdown < 0:
            raise TaskTypeError(f"countdown must be a number of seconds >= 0, got {countdown!r}")
        return float(countdown)
    if run_after is None:
        return 0.0
    if isinstance(run_after, timedelta):
        return max(0.0, run_after.total_seconds())
    if not isinstance(run_after, datetime):
        raise TaskTypeError(f"run_after must be a datetime or a timedelta, got {type(run_after).__name__}")
    if timezone.is_naive(run_after):
        run_after = timezone.make_aware(run_after)
    return max(0.0, (run_after - timezone.now()).total_seconds())


def build_package(
    func: Callable | str, args: tuple, kwargs: dict, options: dict[str, Any], config: Config, **extra: Any
) -> TaskPackage:
    """Check the function and options and make the package (nothing is sent)."""
    task_id = extra.pop("id", None) or new_id()
    common = package_fields(func, options, config)
    common.update(extra)
    return TaskPackage(
        id=task_id,
        name=options.get("task_name") or humanize(task_id),
        args=tuple(args),
        kwargs=dict(kwargs),
        enqueued=time.time(),
        **common,
    )


def package_fields(func: Callable | str, options: dict[str, Any], config: Config) -> dict[str, Any]:
    """The checked fields a call's options give every package it makes (all but id, name, arguments, time)."""
    timeout = options.get("timeout")
    if timeout is not None and not _number(timeout, above=0):
        raise TaskTypeError(f"timeout must be a positive number of seconds, got {timeout!r}")
    hook = options.get("hook")
    return {
        "func": func_reference(func, config.serializer),
        "hook": None if hook is None else _path_of(hook, "hook"),
        "group": options.get("group"),
        "timeout": None if timeout is None else float(timeout),
        "save": options.get("save"),
        "ack_failure": options.get("ack_failure"),
        "cluster": options.get("cluster"),
        "priority": _priority(options.get("priority", 0)),
        **_retry_policy(options),
    }


def _number(value: Any, above: float | None = None, least: float | None = None) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (above is None or value > above) and (least is None or value >= least)


def _priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise TaskTypeError(f"priority must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}, got {priority!r}")
    return priority


def _retry_policy(options: dict[str, Any]) -> dict[str, Any]:
    """The package fields of a retry policy, checked."""
    retries = options.get("retries") or 0
    delay = options.get("retry_delay", 0.0)
    backoff = options.get("retry_backoff", 1.0)
    retry_on = options.get("retry_on") or ()
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TaskTypeError(f"retries must be a whole number >= 0, got {retries!r}")
    if not _number(delay, least=0):
        raise TaskTypeError(f"retry_delay must be a number of seconds >= 0, got {delay!r}")
    if backoff is True:
        backoff = 2.0
    if not _number(backoff, least=1):
        raise TaskTypeError(f"retry_backoff must be a factor >= 1 (or True for 2), got {backoff!r}")
    if not isinstance(retry_on, (tuple, list)):
        retry_on = (retry_on,)
    return {
        "retries": retries,
        "retry_delay": float(delay),
        "retry_backoff": float(backoff),
        "retry_on": tuple(_exception_path(e) for e in retry_on),
    }


def _exception_path(exc: Any) -> str:
    """The dotted path of an exception class given as a class or a path."""
    cls = exc
    if isinstance(exc, str):
        try:
            cls = resolve(exc)
        except ImportError:
            raise TaskTypeError(f"retry_on: cannot import {exc!r}") from None
    if not (inspect.isclass(cls) and issubclass(cls, BaseException)):
        raise TaskTypeError(f"retry_on takes exception classes, got {exc!r}")
    return f"{cls.__module__}.{cls.__qualname__}"


def func_reference(func: Callable | str, serializer: str) -> Any:
    """What the package carries for `func`: a dotted path, or (pickle only) the callable itself."""
    if isinstance(func, str):
        if "." not in func.strip(".") or " " in func:
            raise TaskTypeError(f"func {func!r} is not a dotted path such as 'math.copysign'")
        return func
    if not callable(func):
        raise TaskTypeError(f"func must be a callable or a dotted path, got {type(func).__name__}")
    if inspect.isfunction(func) or inspect.isbuiltin(func) or inspect.isclass(func):
        return _path_of(func, "func")
    if serializer == "json":
        raise TaskTypeError(f"func {callable_path(func)} is not a plain function; the json serializer needs one")
    return func  # a bound method, functools.partial or callable object: pickled with the package


def _path_of(func: Callable | str, what: str) -> str:
    """The importable dotted path of a plain function, or a TaskTypeError saying why it has none."""
    if isinstance(func, str):
        return func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is None:
        raise TaskTypeError(f"{what} {func!r} has no name; pass a module-level function or a dotted path")
    if getattr(func, "__name__", "") == "<lambda>":
        raise TaskTypeError(f"{what} is a lambda; the cluster can only import module-level functions")
    if "<locals>" in name:
        raise TaskTypeError(f"{what} {name} is defined inside a function; the cluster cannot import it")
    module = getattr(func, "__module__", None)
    if not module or module == "__main__":
        raise TaskTypeError(f"{what} {name} is defined in __main__; move it to a module the cluster can import")
    path = f"{module}.{name}"
    if resolve(path) is not func:
        raise TaskTypeError(f"{what} {name} is not importable as {path}")
    return path


def resolve(path: str) -> Any:
    """Import a dotted path to a module attribute (nested attributes allowed)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ImportError(f"cannot import {path!r}")


def enqueue_packages(
    tasks: list[TaskPackage], config: Config, delay: float = 0.0, payloads: list[bytes] | None = None
) -> list[str]:
    """Sign (unless `payloads` are given) and send packages, grouped by cluster and priority.

    Raises TaskTypeError if one does not serialize; nothing is sent then.
    """
    if payloads is None:
        payloads = [_pack(task, config) for task in tasks]
    groups: dict[tuple[str | None, int], tuple[list[bytes], list[str]]] = {}
    for task, payload in zip(tasks, payloads, strict=True):
        signals.pre_enqueue.send(sender="django_q", task=task)
        group = groups.setdefault((task.cluster, task.priority), ([], []))
        group[0].append(payload)
        group[1].append(task.id)
    ids: list[str] = []
    for (cluster, priority), (group_payloads, keys) in groups.items():
        broker = get_broker(cluster, config)
        if len(group_payloads) == 1:
            ids.append(broker.enqueue(group_payloads[0], priority, delay, keys[0]))
        else:
            ids += broker.enqueue_many(group_payloads, priority, delay, keys)
    return ids


def _pack(task: TaskPackage, config: Config) -> bytes:
    try:
        return pack(task, config.serializer, config.compress, config.package_limit)
    except PackageTooLarge:
        raise
    except Exception as exc:
        raise TaskTypeError(
            f"task {task.name} ({task.func_name}) cannot be serialized with {config.serializer}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def run_sync(task: TaskPackage, config: Config) -> None:
    """Run a task in this process through the same pack, execute and save steps as the cluster.

    A retry policy runs it again at once (no delay is waited out in this process).
    """
    from .cluster.monitor import Recorder
    from .cluster.worker import run_package

    signals.pre_enqueue.send(sender="django_q", task=task)
    payload = _pack(task, config)
    attempt = 1
    while True:
        outcome = run_package(payload, delivery_id="sync", attempts=attempt, config=config)
        if outcome.retry_payload is None:
            break
        payload, attempt = outcome.retry_payload, attempt + 1
    Recorder(config, sync=True).record([outcome])


def async_iter(func: Callable | str, args_iter: Iterable[Any], **options: Any) -> str:
    """Enqueue one task per item of `args_iter`; the parent id's result is the list of results."""
    config = get_config()
    parent = new_id()
    items = [item if isinstance(item, tuple) else (item,) for item in args_iter]
    if not items:
        raise TaskTypeError("async_iter needs at least one item")
    base = options.pop("task_name", None) or humanize(parent)
    parts = [
        build_package(
            func,
            args,
            {},
            {**options, "task_name": f"{base}-{i}"},
            config,
            id=f"{parent[:24]}{i:08x}",
            parent=parent,
            iter_count=len(items),
        )
        for i, args in enumerate(items)
    ]
    if options.get("sync", config.sync):
        for part in parts:
            run_sync(part, config)
    else:
        enqueue_packages(parts, config)
    return parent


def async_chain(chain: list, group: str | None = None, cluster: str | None = None, sync: bool | None = None) -> str:
    """Run `[(func, args, kwargs), ...]` one after another; returns the group the results are in."""
    if not chain:
        raise TaskTypeError("async_chain needs at least one task")
    links = [normalize_link(link) for link in chain]
    group = group or new_id()
    func, args, kwargs = links[0]
    options = {k: kwargs.pop(k) for k in OPTION_NAMES & kwargs.keys()}
    options.update(group=group, cluster=cluster)
    if sync is not None:
        options["sync"] = sync
    config = get_config()
    task = build_package(func, args, kwargs, options, config, chain=tuple(links[1:]))
    if options.get("sync", config.sync):
        run_sync(task, config)
    else:
        enqueue_packages([task], config)
    return group


def normalize_link(link: Any) -> tuple[Any, tuple, dict]:
    """A chain link as (func, args, kwargs) from a func, (func,), (func, args) or (func, args, kwargs)."""
    if not isinstance(link, (tuple, list)):
        link = (link,)
    func = link[0]
    args = tuple(link[1]) if len(link) > 1 and link[1] is not None else ()
    kwargs = dict(link[2]) if len(link) > 2 and link[2] is not None else {}
    return (func if isinstance(func, str) else _path_of(func, "func"), args, kwargs)


def _wait(get: Callable[[], Any], wait: int) -> Any:
    """Call `get` until it returns something, for up to `wait` ms (-1: forever)."""
    value = get()
    deadline = None if wait < 0 else time.monotonic() + wait / 1000
    pause = 0.01
    while value is None and (deadline is None or time.monotonic() < deadline):
        time.sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.2)
        value = get()
    return value


def fetch(task_id: str, wait: int = 0, cluster: str | None = None) -> Any:
    """The Task of an id or name: the stored one once it finished, waiting up to `wait` ms for that.

    Before it finished, a task still in the broker of `cluster` is returned
    unsaved, with `status` queued or running (and `success` None); a task
    that is nowhere gives None.
    """
    from .models import Task

    stored = _wait(lambda: Task.get_task(task_id), wait)
    if stored is not None:
        return stored
    in_flight = Task.in_flight(task_id, cluster)
    # It may have finished between the two reads.
    return in_flight if in_flight is not None else Task.get_task(task_id)


def cancel(task_id: str, cluster: str | None = None) -> bool:
    """Cancel a task that has not finished: False if it is not in the broker of `cluster`.

    A queued (or deferred) task is removed and recorded as cancelled at once.
    A running one is asked to stop: its worker raises TaskCancelled inside it,
    and is killed after Q_CLUSTER['cancel_grace'] seconds if it does not stop;
    the cluster then records it as cancelled. A cancelled task's hook is called.
    """
    from .brokers.base import REMOVED
    from .cluster.messages import Outcome
    from .cluster.monitor import Recorder
    from .package import unpack

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
        Recorder(config, sync=True).record([outcome])
    return True


def result(task_id: str, wait: int = 0) -> Any:
    """The result of a task, or None until it ran; waits up to `wait` ms (-1: forever)."""
    from .models import Task

    task = _wait(lambda: Task.get_task(task_id), wait)
    return task.result if task is not None else None


def _group_tasks(group: str, failures: bool, wait: int, count: int | None) -> list | None:
    from .models import Task

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
    from .models import Task

    return Task.objects.filter(group=group, success=not failures).count()


def delete_group(group: str, tasks: bool = False) -> int:
    """Remove the group label from its tasks, or delete the tasks with `tasks=True`."""
    from .models import Task

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
    from .models import Schedule

    sched = Schedule(
        name=name,
        func=_path_of(func, "func"),
        hook=None if hook is None else _path_of(hook, "hook"),
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
