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
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from django import db

from .. import signals
from ..conf import Config
from ..exceptions import PackageError
from ..package import TaskPackage, unpack
from . import process
from .messages import STOP, AlreadyDone, Exit, Hello, Job, Outcome, Rejected, Role, Started

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


def execute(
    task: TaskPackage, delivery_id: str, attempts: int, config: Config, own_connections: bool = True
) -> Outcome:
    """Run a task and make its Outcome; in a worker (`own_connections`) around fresh DB connections."""
    if own_connections:
        db.close_old_connections()
    started = time.time()
    try:
        success, value = call(task)
    finally:
        if own_connections:
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


def run_package(payload: bytes, delivery_id: str, attempts: int, config: Config) -> Outcome:
    """Unpack and run a package in the calling process, leaving its DB connections alone (sync mode)."""
    task = unpack(payload, config.package_limit)
    return checked(execute(task, delivery_id, attempts, config, own_connections=False))


def rss_kib() -> int:
    """Resident memory of this process in KiB."""
    import psutil

    return psutil.Process().memory_info().rss // 1024


def succeeded_before(task_id: str) -> bool:
    """Whether a success of this task id is stored (only asked of redelivered tasks)."""
    from ..models import Task

    try:
        return Task.objects.filter(id=task_id, success=True).exists()
    except db.DatabaseError:
        return False  # cannot tell: run it again, at least once beats never


class Worker:
    """One worker's conversation with the pusher; `loop()` serves one message."""

    def __init__(self, conn: Connection, index: int, config: Config) -> None:
        self.conn = conn
        self.index = index
        self.config = config
        self.done = 0

    def loop(self) -> Exit | None:
        """Serve one message; an Exit once the worker should end."""
        job = self.conn.recv()
        if job is STOP:
            return Exit.STOPPED
        if not isinstance(job, Job):
            return None
        try:
            task = unpack(job.payload, self.config.package_limit, verified=True)
        except PackageError as exc:
            self.conn.send(Rejected(job.delivery_id, str(exc)))
            return None
        if job.attempts > 1 and succeeded_before(task.id):
            self.conn.send(AlreadyDone(job.delivery_id))  # its cluster died between save and ack
            return None
        self.conn.send(Started(job.delivery_id, task.timeout or self.config.timeout))
        outcome = execute(task, job.delivery_id, job.attempts, self.config)
        try:
            self.conn.send(outcome)  # pickles fully before writing, so a failure writes nothing
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            self.conn.send(unpicklable(outcome, exc))
        self.done += 1
        if self.done >= self.config.recycle or (self.config.max_rss and rss_kib() > self.config.max_rss):
            logger.info("worker-%s (pid %s) recycled after %s tasks", self.index, os.getpid(), self.done)
            return Exit.RECYCLED
        return None


def main(address: str, authkey: bytes, index: int, config: Config) -> None:
    """Process entry point: serve the pusher (a new one, if it is replaced) until stopped or recycled."""
    process.setup(f"worker-{index}", config.name)
    done = 0
    while True:
        conn = process.connect(address, authkey, Hello(Role.WORKER, os.getpid(), index))
        if conn is None:
            sys.exit(Exit.UNREACHABLE)
        worker = Worker(conn, index, config)
        worker.done = done
        try:
            while (end := worker.loop()) is None:
                pass
        except (EOFError, OSError):
            done = worker.done
            continue  # the pusher died; the sentinel starts another, so reconnect
        finally:
            conn.close()
        sys.exit(end)
