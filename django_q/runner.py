"""Running a task: look its function up, call it, and describe what happened as an Outcome.

The cluster's workers, sync mode and the Django tasks backend all run tasks
through `execute`. A failure is data: it is caught, described and returned,
never raised. A task's retry policy is applied here: a failed attempt that
the policy runs again comes back with the package the broker gets back.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from django import db

from . import reporters, signals
from .conf import Config
from .exceptions import TaskCancelled
from .funcs import resolve
from .models import Task
from .names import worker_id
from .outcomes import Outcome
from .package import TaskPackage, pack, unpack
from .rows import epoch_datetime

logger = logging.getLogger("django_q")

# Task functions by dotted path, in a worker process only (`remember_functions`):
# a path is imported and looked up once per worker. A task run in the caller's
# process (sync) is looked up every time, so that a test's mock.patch holds.
_functions: dict[str, Any] | None = None
_on_function: Callable[[Any], None] | None = None
# The delivery this process runs now (None between tasks); a cancel stops only that one.
_running: str | None = None
_loop: asyncio.AbstractEventLoop | None = None


def remember_functions(on_function: Callable[[Any], None] | None = None) -> None:
    """In a worker process: look each dotted path up once, and tell `on_function` of each new function."""
    global _functions, _on_function
    _functions, _on_function = {}, on_function


def running_delivery() -> str | None:
    """The delivery id of the task this process runs now, or None."""
    return _running


def function(func: Any) -> Any:
    """The task's function: a dotted path imported and looked up (once per worker), or the callable itself."""
    if not isinstance(func, str):
        if _on_function is not None:
            _on_function(func)
        return func
    if _functions is None:  # not a worker (sync mode): looked up every time
        return resolve(func)
    found = _functions.get(func)
    if found is None:
        found = _functions[func] = resolve(func)
        if _on_function is not None:
            _on_function(found)
    return found


def _run_coroutine(awaitable: Any) -> Any:
    """Await on one event loop kept for the worker's life (cheaper than asyncio.run per task)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    try:
        return _loop.run_until_complete(awaitable)
    except TaskCancelled:
        _loop = None  # interrupted mid-step: start the next task on a fresh loop
        raise


@dataclass(frozen=True, slots=True)
class Ran:
    """What calling a task's function gave."""

    success: bool
    value: Any  # the return value, or the traceback text
    error: BaseException | None = None
    cancelled: bool = False


def call(task: TaskPackage, attempt: int = 1, delivery_id: str | None = None) -> Ran:
    """Run the task's function; a failure is caught and described, never raised here."""
    global _running
    _running = delivery_id
    try:
        func = function(task.func)
        if signals.pre_execute.has_listeners("django_q"):
            signals.pre_execute.send(sender="django_q", func=func, task=signals.package_info(task))
        if task.django is not None:
            # django.tasks exists from Django 6 on only, and only its tasks carry `django`.
            from .djtasks import run_task

            value = run_task(func, task, attempt)
        else:
            value = func(*task.args, **task.kwargs)
            if inspect.isawaitable(value):
                value = _run_coroutine(value)
        return Ran(True, value)
    except TaskCancelled:
        return Ran(False, "cancelled while running", cancelled=True)
    except Exception as exc:  # a task's failure is data: it is saved, never raised here
        return Ran(False, traceback.format_exc(), error=exc)
    finally:
        _running = None


def execute(
    task: TaskPackage, delivery_id: str, attempts: int, config: Config, own_connections: bool = True
) -> Outcome:
    """Run a task and make its Outcome; in a worker (`own_connections`) around fresh DB connections."""
    if own_connections:
        db.close_old_connections()
    started = time.time()
    try:
        ran = call(task, attempts, delivery_id)
    finally:
        if own_connections:
            db.close_old_connections()
    stopped = time.time()
    if ran.error is not None:
        reporters.report(config, ran.error)
    outcome = Outcome(
        delivery_id=delivery_id,
        task=task,
        success=ran.success,
        result=ran.value,
        started=started,
        stopped=stopped,
        attempts=attempts,
        cluster=task.cluster or config.name,
        ack=ran.success or ran.cancelled or acks_failure(task, config),
        cancelled=ran.cancelled,
        exception=None if ran.error is None else class_path(type(ran.error)),
        worker=worker_id(),
    )
    if signals.post_execute_in_worker.has_listeners("django_q"):
        _ran_in_worker(task, outcome)
    if ran.error is not None and _retries(task, ran.error, attempts, config):
        delay = task.retry_delay * task.retry_backoff ** (attempts - 1)
        again = replace(task, history=(*task.history, _attempt(outcome)))
        outcome = outcome._replace(retry_payload=pack(again, config.serializer, config.compress), retry_in=delay)
    return outcome


def _ran_in_worker(task: TaskPackage, outcome: Outcome) -> None:
    """Send django-q2's post_execute_in_worker; a receiver that raises is logged, the outcome stands."""
    info = signals.package_info(task)
    info.update(result=outcome.result, success=outcome.success, stopped=epoch_datetime(outcome.stopped))
    try:
        func = function(task.func)
    except Exception:  # it could not be imported: the outcome says so already
        func = None
    try:
        signals.post_execute_in_worker.send(sender="django_q", func=func, task=info)
    except Exception:
        logger.exception("a post_execute_in_worker receiver failed on task %s (%s)", task.name, task.id)


def _retries(task: TaskPackage, error: BaseException, attempts: int, config: Config) -> bool:
    """Whether the task's retry policy runs it again after this failed attempt."""
    if attempts > task.retries or (config.max_attempts and attempts >= config.max_attempts):
        return False
    if not task.retry_on:
        return True
    names = {class_path(cls) for cls in type(error).__mro__}
    return any(path in names for path in task.retry_on)


def _attempt(outcome: Outcome) -> dict[str, Any]:
    """An earlier failed attempt, as kept in the package's history and the Task row."""
    return {
        "attempt": outcome.attempts,
        "worker": outcome.worker,
        "exception": outcome.exception,
        "traceback": outcome.result,
        "started": outcome.started,
        "stopped": outcome.stopped,
    }


def class_path(cls: type) -> str:
    """The dotted path of a class, as results name exception classes."""
    return f"{cls.__module__}.{cls.__qualname__}"


def acks_failure(task: TaskPackage, config: Config) -> bool:
    """Whether a failure of `task` is acked (recorded for good) rather than delivered again."""
    return task.ack_failure if task.ack_failure is not None else config.ack_failures


def unpicklable(outcome: Outcome, exc: Exception) -> Outcome:
    """The failure recorded when a task's return value cannot be pickled."""
    kind = type(outcome.result).__name__
    return outcome.with_result(False, f"the result of type {kind} cannot be pickled: {type(exc).__name__}: {exc}")


def checked(outcome: Outcome) -> Outcome:
    """The outcome, or its unpicklable() failure if the result does not pickle."""
    try:
        pickle.dumps(outcome.result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return unpicklable(outcome, exc)
    return outcome


def run_package(payload: bytes, delivery_id: str, attempts: int, config: Config) -> Outcome:
    """Unpack and run a package in the calling process, leaving its DB connections alone (sync mode)."""
    task = unpack(payload, config.package_limit)
    return checked(execute(task, delivery_id, attempts, config, own_connections=False))


def succeeded_before(task_id: str) -> bool:
    """Whether a success of this task id is stored (only asked of redelivered tasks)."""
    try:
        return Task.objects.filter(id=task_id, success=True).exists()
    except db.DatabaseError:
        return False  # cannot tell: run it again, at least once beats never
