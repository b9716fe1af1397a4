"""The one way a task is enqueued: check the options, make the packages, send them (or run them, in sync mode).

Every way in meets in `enqueue()`: `async_task`, `async_many`, `async_iter`,
`async_chain`, schedules and their "run now", resubmitting from the admin,
chains continued by the saver, and the Django tasks backend. It checks
the options, applies delay, priority and on-commit, and sends `pre_enqueue`.

Packages of one call differ only in id, name, arguments and enqueue time, so
they are serialized from their shared fields (`package.pack_copy`) without
making a TaskPackage each; one is made only for a `pre_enqueue` receiver or
a sync run to see.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import router, transaction
from django.utils import timezone

from . import signals
from .brokers import get_broker
from .brokers.base import QueueBackend, check_priority
from .conf import Config, get_config
from .exceptions import PackageTooLarge, ScheduleError, TaskTypeError
from .funcs import callable_path, path_of, resolve
from .guard import denied
from .models import Schedule
from .names import humanize, new_id, new_ids
from .package import TaskPackage, copy_fields, pack, pack_copy
from .recorder import Recorder
from .runner import run_package
from .schedules import parse_args, parse_kwargs
from .unique import unique_keys

logger = logging.getLogger("django_q")

OPTION_NAMES = frozenset(
    {
        "hook", "group", "timeout", "task_name", "save", "sync", "ack_failure", "cluster",
        # the task lifecycle: rank, defer, retry, and wait for the transaction
        "priority", "run_after", "countdown", "retries", "retry_delay", "retry_backoff", "retry_on", "on_commit",
        # django-q2's: a broker to send through, results in Django's cache, a hand-made iter, a chain to follow
        "broker", "cached", "iter_count", "iter_cached", "chain",
        # one task per key while it is queued or running (django_q.unique)
        "unique",
    }
)

# The shared fields (package.copy_fields) of the packages of a function called
# without options, by function, for the configuration in `_plain_config`:
# checked once, then each call serializes its own fields onto them.
_plain: dict[Any, dict[str, Any]] = {}
_plain_config: Config | None = None
PLAIN_MAX = 256  # functions remembered; the whole table starts over beyond


def enqueue(
    func: Callable | str,
    args: Sequence[tuple],
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    fields: Mapping[str, Any] | None = None,
    config: Config | None = None,
    after: Callable[[], Any] | None = None,
    enqueued: float | None = None,
) -> list[str]:
    """Enqueue one task of `func` per tuple of `args` (each with `kwargs`) and return their ids.

    `options` are those of async_task and apply to every task. `ids` and
    `names` give the tasks their own (one per task); `fields` sets other
    package fields (chain, parent, iter_count, django). `after` is called
    once the tasks are sent (or, on commit, when they are). `enqueued` is the
    enqueue time the packages carry (epoch seconds; now by default). Raises
    TaskTypeError (or PackageTooLarge) before anything is sent if an option,
    the function or an argument cannot go to a worker.
    """
    config = config or get_config()
    # Most calls come without options, ids or names: those cost no checks.
    if options:
        unknown = options.keys() - OPTION_NAMES
        if unknown:
            raise TaskTypeError(
                f"unknown option(s): {', '.join(sorted(unknown))} (options: {', '.join(sorted(OPTION_NAMES))})"
            )
        delay = delay_of(options)
        sync, on_commit = options.get("sync"), options.get("on_commit")
        broker = _broker_option(options.get("broker"))
    else:
        options, delay, sync, on_commit, broker = {}, 0.0, None, None, None
    count = len(args)
    ids = new_ids(count) if ids is None else list(ids)
    names = _names(ids, options.get("task_name")) if names is None else list(names)
    if len(ids) != count or len(names) != count:
        raise TaskTypeError(f"{count} tasks but {len(ids)} ids and {len(names)} names")
    kwargs = dict(kwargs) if kwargs else {}
    base = _shared_fields(func, options, fields, config)
    uniques = unique_keys(options.get("unique"), base["func"], args, kwargs, grouped=bool(base.get("iter_count")))
    now = enqueued or time.time()
    # A sync task has finished when this returns, and was never queued: it holds no key and waits for none.
    if sync if sync is not None else config.sync:
        if after is not None:
            after()
        for task in _packages(base, ids, names, args, kwargs, now):
            run_sync(task, config)
        return ids
    # What the call's packages share, its time and keyword arguments included: each adds its id, name and args.
    shared = {**base, "enqueued": now, "kwargs": kwargs} if kwargs else {**base, "enqueued": now}
    payloads = _pack_all(shared, ids, names, args, config)

    def send() -> None:
        # Receivers of every sender, or of ours; most projects connect none (an empty list is the cheap check).
        if signals.pre_enqueue.receivers and signals.pre_enqueue.has_listeners("django_q"):
            for task in _packages(base, ids, names, args, kwargs, now):
                signals.pre_enqueue.send(sender="django_q", task=signals.package_info(task))
        to = broker or get_broker(base.get("cluster"), config)
        if uniques:
            _send_unique(to, payloads, uniques, ids, base.get("priority", 0), delay)
        elif count == 1:
            to.enqueue(payloads[0], base.get("priority", 0), delay, ids[0])
        elif count:
            to.enqueue_many(payloads, base.get("priority", 0), delay, ids)
        if after is not None:
            after()

    if on_commit if on_commit is not None else config.on_commit:
        transaction.on_commit(send)
        # The ids as given: a unique task found held at the commit is not sent, and its id never shows.
        return list(ids)
    send()
    return ids


def _send_unique(
    to: QueueBackend, payloads: list[bytes], uniques: list[str], ids: list[str], priority: int, delay: float
) -> None:
    """Send each package unless its key is held; the id of a task held back becomes its holder's, in `ids`.

    One call per package: each is its own atomic check in the broker.
    """
    for i, (payload, unique) in enumerate(zip(payloads, uniques)):
        holder = to.enqueue_unique(payload, unique, ids[i], priority, delay)
        if holder != ids[i]:
            logger.debug("unique task %s not sent: task %s holds its key on queue %s", ids[i], holder, to.name)
            ids[i] = holder


def _broker_option(broker: Any) -> QueueBackend | None:
    """The broker an enqueue reuses (django-q2's `broker=`), checked: one get_broker() returned."""
    if broker is not None and not isinstance(broker, QueueBackend):
        raise TaskTypeError(f"broker must be a broker such as get_broker() returns, got {type(broker).__name__}")
    return broker


def _names(ids: list[str], task_name: str | None) -> list[str]:
    if task_name is None:
        return [humanize(task_id) for task_id in ids]
    if len(ids) != 1:
        raise TaskTypeError("task_name names one task; these calls name each task themselves")
    return [task_name]


def _shared_fields(
    func: Callable | str, options: Mapping[str, Any], fields: Mapping[str, Any] | None, config: Config
) -> dict[str, Any]:
    """The checked package fields every task of the call shares (package.copy_fields of its template)."""
    global _plain_config
    plain = not options and not fields and (type(func) is str or inspect.isfunction(func))
    if plain:
        if _plain_config is not config or len(_plain) >= PLAIN_MAX:
            _plain.clear()
            _plain_config = config
        base = _plain.get(func)
        if base is not None:
            return base
    base = copy_fields(TaskPackage(id="", name="", **{**package_fields(func, options, config), **(fields or {})}))
    if plain:
        _plain[func] = base
    return base


def _packages(
    base: dict[str, Any], ids: list[str], names: list[str], args: Sequence[tuple], kwargs: dict, now: float
) -> list[TaskPackage]:
    """The TaskPackages of a call, for a pre_enqueue receiver or a sync run."""
    template = TaskPackage.from_dict({"id": "", "name": "", **base, "kwargs": kwargs, "enqueued": now})
    return [replace(template, id=i, name=n, args=tuple(a)) for i, n, a in zip(ids, names, args, strict=True)]


def _pack_all(
    base: dict[str, Any], ids: list[str], names: list[str], args: Sequence[tuple], config: Config
) -> list[bytes]:
    """The signed payloads of a call's tasks, or a TaskTypeError naming the first that does not serialize."""
    serializer, compress, limit = config.serializer, config.compress, config.package_limit
    try:
        return [pack_copy(base, i, n, a, serializer, compress, limit) for i, n, a in zip(ids, names, args)]
    except PackageTooLarge:
        raise
    except Exception as exc:
        failed: Exception = exc
    name = names[0]
    for task_id, name, task_args in zip(ids, names, args):  # find the one that failed, to name it
        try:
            pack_copy(base, task_id, name, task_args, serializer, compress, limit)
        except Exception as exc:
            failed = exc
            break
    func = base["func"] if isinstance(base["func"], str) else callable_path(base["func"])
    raise _unserializable(name, func, serializer, failed) from failed


def _unserializable(name: str, func: str, serializer: str, exc: Exception) -> TaskTypeError:
    return TaskTypeError(f"task {name} ({func}) cannot be serialized with {serializer}: {type(exc).__name__}: {exc}")


def pack_task(task: TaskPackage, config: Config) -> bytes:
    """Serialize and sign one package, or a TaskTypeError naming the task (PackageTooLarge if too big)."""
    try:
        return pack(task, config.serializer, config.compress, config.package_limit)
    except PackageTooLarge:
        raise
    except Exception as exc:
        raise _unserializable(task.name, task.func_name, config.serializer, exc) from exc


def run_sync(task: TaskPackage, config: Config) -> None:
    """Run a task in this process through the same pack, execute and save steps as the cluster.

    A retry policy runs it again at once (no delay is waited out in this process).
    """
    if signals.pre_enqueue.receivers and signals.pre_enqueue.has_listeners("django_q"):
        signals.pre_enqueue.send(sender="django_q", task=signals.package_info(task, sync=True))
    payload = pack_task(task, config)
    attempt = 1
    while True:
        outcome = run_package(payload, delivery_id="sync", attempts=attempt, config=config)
        if outcome.retry_payload is None:
            break
        payload, attempt = outcome.retry_payload, attempt + 1
    Recorder(config, chain=lambda done: continue_chain(done, config, sync=True)).record([outcome])


def continue_chain(task: TaskPackage, config: Config, sync: bool = False) -> str:
    """Enqueue the next link of the chain `task` ran (in this process with `sync`); its task id."""
    options = {"group": task.group, "cluster": task.cluster, "sync": sync, "on_commit": False, "cached": task.cached}
    return enqueue_link(task.chain[0], task.chain[1:], options, config)


def enqueue_link(link: tuple, rest: Sequence[tuple], options: Mapping[str, Any], config: Config | None = None) -> str:
    """Enqueue one link (func, args, kwargs) of a chain, `rest` to follow it; its task id.

    Options of async_task among the link's keyword arguments apply to it, under `options`.
    """
    func, args, kwargs = link
    kwargs = dict(kwargs)
    own = {k: kwargs.pop(k) for k in OPTION_NAMES & kwargs.keys()}
    return enqueue(func, [args], kwargs, {**own, **options}, fields={"chain": tuple(rest)}, config=config)[0]


def delay_of(options: Mapping[str, Any]) -> float:
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
        if settings.USE_TZ:  # a naive time could be meant in any zone: guessing UTC runs it hours early or late
            raise TaskTypeError(
                f"run_after {run_after.isoformat()} is naive but USE_TZ is on: pass an aware datetime "
                "(timezone.now() + ...) or a timedelta"
            )
        run_after = timezone.make_aware(run_after)  # without USE_TZ, Django's times are local (TIME_ZONE)
    return max(0.0, (run_after - datetime.now(UTC)).total_seconds())


def package_fields(func: Callable | str, options: Mapping[str, Any], config: Config) -> dict[str, Any]:
    """The checked fields a call's options give every package it makes (all but id, name, arguments, time)."""
    timeout = options.get("timeout")
    if timeout is not None and not _number(timeout, above=0):
        raise TaskTypeError(f"timeout must be a positive number of seconds, got {timeout!r}")
    hook = options.get("hook")
    return {
        "func": func_reference(func, config.serializer),
        "hook": None if hook is None else path_of(hook, "hook"),
        "group": options.get("group"),
        "timeout": None if timeout is None else float(timeout),
        "save": options.get("save"),
        "ack_failure": options.get("ack_failure"),
        "cluster": options.get("cluster"),
        "priority": check_priority(options.get("priority", 0)),
        "cached": _cached_option("cached", options.get("cached", config.cached)),
        "iter_cached": _cached_option("iter_cached", options.get("iter_cached", False)),
        **_retry_policy(options),
        **_q2_structure(options),
    }


def _cached_option(name: str, value: Any) -> bool | int:
    """`cached` or `iter_cached`: False, True (kept until evicted) or whole seconds to keep the result."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, int) and value > 0:
        return value
    raise TaskTypeError(f"{name} must be True, False or a whole number of seconds > 0, got {value!r}")


def _q2_structure(options: Mapping[str, Any]) -> dict[str, Any]:
    """Package fields of django-q2's `chain` (links to run after this task) and `iter_count` (a hand-made iter).

    With iter_count, the task is one of that many parts whose results are
    saved as one list under the id `group` (what async_iter does itself).
    """
    out: dict[str, Any] = {}
    chain = options.get("chain")
    if chain:
        if not isinstance(chain, (list, tuple)):
            raise TaskTypeError(f"chain must be a list of (func, args, kwargs), got {type(chain).__name__}")
        out["chain"] = tuple(normalize_link(link) for link in chain)
    iter_count = options.get("iter_count")
    if iter_count is not None:
        if isinstance(iter_count, bool) or not isinstance(iter_count, int) or iter_count < 1:
            raise TaskTypeError(f"iter_count must be a whole number > 0, got {iter_count!r}")
        if not options.get("group"):
            raise TaskTypeError("iter_count needs a group: the id the list of results is saved under")
        out["parent"], out["iter_count"] = options["group"], iter_count
    return out


def normalize_link(link: Any) -> tuple[Any, tuple, dict]:
    """A chain link as (func, args, kwargs) from a func, (func,), (func, args) or (func, args, kwargs)."""
    if not isinstance(link, (tuple, list)):
        link = (link,)
    if not link:
        raise TaskTypeError("a chain link must name a function, got an empty one")
    func = link[0]
    args = tuple(link[1]) if len(link) > 1 and link[1] is not None else ()
    kwargs = dict(link[2]) if len(link) > 2 and link[2] is not None else {}
    return (func if isinstance(func, str) else path_of(func, "func"), args, kwargs)


def _number(value: Any, above: float | None = None, least: float | None = None) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (above is None or value > above) and (least is None or value >= least)


def _retry_policy(options: Mapping[str, Any]) -> dict[str, Any]:
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
        return path_of(func, "func")
    if serializer == "json":
        raise TaskTypeError(f"func {callable_path(func)} is not a plain function; the json serializer needs one")
    return func  # a bound method, functools.partial or callable object: pickled with the package


# --- schedules ---


def group_of(row: Schedule) -> str:
    """The group of a schedule's tasks: its name, or its id (as in django-q)."""
    return row.name or str(row.pk)


def schedule_call(row: Schedule) -> tuple[tuple, dict[str, Any], dict[str, Any]]:
    """The arguments, keyword arguments and options of a run of `row`.

    ScheduleError if its text is bad, or if it names a function nobody may
    schedule: a row written around full_clean() (with SQL, say) runs nothing
    of the deny list either.
    """
    for path in (row.func, row.hook):
        if path and (why := denied(path)):
            raise ScheduleError(why)
    kwargs = parse_kwargs(row.kwargs)
    options = {"hook": row.hook or None, "group": group_of(row), "on_commit": False}
    # django-q's schedule(..., q_options={...}) kept the task's options among the kwargs, and its
    # scheduler took them out; options we do not have (broker_name) are left out.
    own = kwargs.pop("q_options") if isinstance(kwargs.get("q_options"), dict) else {}
    # unique is not for schedules, whose run would go unrecorded: Schedule.overlap is their way.
    for key in OPTION_NAMES & own.keys() - {"on_commit", "unique"}:
        if key != "hook" or not row.hook:
            options[key] = own[key]
    hook = options["hook"]
    if isinstance(hook, str) and (why := denied(hook)):  # a hook among the kwargs is held to the same rule
        raise ScheduleError(why)
    return parse_args(row.args), kwargs, options


def run_now(row: Schedule) -> str:
    """Enqueue a run of `row` now, outside its series: next_run and repeats stay as they are."""
    args, kwargs, options = schedule_call(row)
    task_id = enqueue(row.func, [args], kwargs, options)[0]
    Schedule.objects.using(router.db_for_write(Schedule)).filter(pk=row.pk).update(task=task_id)
    row.task = task_id
    return task_id


def build_package(
    func: Callable | str, args: tuple, kwargs: Mapping[str, Any], options: Mapping[str, Any], config: Config,
    *, id: str | None = None, **fields: Any,
) -> TaskPackage:
    """The package `enqueue` makes of one call, without sending it (for inspection and tests)."""
    task_id = id or new_id()
    names = _names([task_id], options.get("task_name"))
    base = _shared_fields(func, options, fields, config)
    return _packages(base, [task_id], names, [tuple(args)], dict(kwargs), time.time())[0]
