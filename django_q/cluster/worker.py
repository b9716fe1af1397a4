"""The worker: takes jobs from the pusher, runs them, and hands back each outcome.

A worker is replaced after `recycle` tasks, or after a task that left it above
`max_rss` KiB. It is killed from outside (by the pusher) when a task runs past
its timeout, so nothing here has to interrupt a running function.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
import time
import traceback
from typing import Any

from django import db

from .. import signals
from ..conf import Config
from ..exceptions import PackageError
from ..package import TaskPackage, unpack
from . import process
from .messages import STOP, Hello, Job, Outcome, Rejected, Role, Started

logger = logging.getLogger("django_q")

_loop: asyncio.AbstractEventLoop | None = None


def _run_coroutine(awaitable: Any) -> Any:
    """Await on one event loop kept for the worker's life (cheaper than asyncio.run per task)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(awaitable)


def call(task: TaskPackage) -> tuple[bool, Any]:
    """Run the task's function; return (True, value) or (False, traceback text)."""
    from ..tasks import resolve

    try:
        func = resolve(task.func) if isinstance(task.func, str) else task.func
        signals.pre_execute.send(sender="django_q", func=func, task=task)
        value = func(*task.args, **task.kwargs)
        if inspect.isawaitable(value):
            value = _run_coroutine(value)
        return True, value
    except Exception:  # a task's failure is data: it is saved, never raised here
        return False, traceback.format_exc()


def execute(task: TaskPackage, delivery_id: str, attempts: int, config: Config) -> Outcome:
    """Run a task with fresh database connections and make its Outcome."""
    db.close_old_connections()
    started = time.time()
    try:
        success, value = call(task)
    finally:
        db.close_old_connections()
    return Outcome(
        delivery_id=delivery_id,
        task=task,
        success=success,
        result=value,
        started=started,
        stopped=time.time(),
        attempts=attempts,
        cluster=task.cluster or config.name,
        ack=success or _acks_failure(task, config),
    )


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


def _acks_failure(task: TaskPackage, config: Config) -> bool:
    return task.ack_failure if task.ack_failure is not None else config.ack_failures


def run_package(payload: bytes, delivery_id: str, attempts: int, config: Config, verified: bool = False) -> Outcome:
    """Unpack and run a package (raises PackageError if it cannot be trusted or read)."""
    task = unpack(payload, config.package_limit, verified=verified)
    return checked(execute(task, delivery_id, attempts, config))


def rss_kib() -> int:
    """Resident memory of this process in KiB."""
    import psutil

    return psutil.Process().memory_info().rss // 1024


def main(address: str, authkey: bytes, index: int, config: Config) -> None:
    """Process entry point: serve the pusher until told to stop, recycled, or orphaned."""
    process.setup(f"worker-{index}")
    conn = process.connect(address, authkey, Hello(Role.WORKER, os.getpid(), index))
    if conn is None:
        return
    done = 0
    try:
        while True:
            job = conn.recv()
            if job is STOP:
                return
            if not isinstance(job, Job):
                continue
            try:
                task = unpack(job.payload, config.package_limit, verified=True)
            except PackageError as exc:
                conn.send(Rejected(job.delivery_id, str(exc)))
                continue
            conn.send(Started(job.delivery_id, task.timeout or config.timeout))
            outcome = execute(task, job.delivery_id, job.attempts, config)
            try:
                conn.send(outcome)  # pickles fully before writing, so a failure writes nothing
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                conn.send(unpicklable(outcome, exc))
            done += 1
            if done >= config.recycle or (config.max_rss and rss_kib() > config.max_rss):
                logger.info("worker-%s (pid %s) recycled after %s tasks", index, os.getpid(), done)
                return
    except (EOFError, OSError):
        return  # the pusher went away; the sentinel replaces or stops us
    finally:
        conn.close()
