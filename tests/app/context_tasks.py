"""Tasks that look at their own context (django_q.tasks.current_task) and report progress."""

import asyncio
import os
import time

from django_q.tasks import current_task

WAIT_MOST = 60.0  # seconds a task waits for the test's go-ahead before it gives up


def fields(context) -> dict:
    """What a test compares: the context's fields, and its last progress report."""
    last = context.last_progress
    return {
        "id": context.id, "name": context.name, "func": context.func, "group": context.group,
        "attempt": context.attempt, "cluster": context.cluster, "progress": last and last.as_dict(),
    }


def _go(path: str) -> bool:
    deadline = time.monotonic() + WAIT_MOST
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def report_then_wait(go: str, done, total=None, note=""):
    """Report progress, then run until the file `go` exists (bounded by WAIT_MOST); return the context."""
    context = current_task()
    context.progress(done, total, note)
    if not _go(go):
        raise TimeoutError(f"{go} never came")
    return fields(context)


def context_now():
    """The current context's fields, or None outside a task."""
    context = current_task()
    return None if context is None else fields(context)


def die_on_first_attempt():
    """Kill the worker on the first delivery (the task is delivered again); return the context after."""
    context = current_task()
    if context.attempt == 1:
        os._exit(3)
    return fields(context)


async def _nested_report(done, total, note):
    await asyncio.sleep(0)
    current_task().progress(done, total, note)
    return current_task().id


async def async_report_then_wait(go: str, done, total=None, note=""):
    """A coroutine task: an awaited coroutine, and a task it spawns, see the context and report progress."""
    seen_by_nested = await _nested_report(done, total, note)
    seen_by_spawned = await asyncio.create_task(_nested_report(done, total, note))
    deadline = time.monotonic() + WAIT_MOST
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} never came")
        await asyncio.sleep(0.02)
    return {**fields(current_task()), "nested": seen_by_nested, "spawned": seen_by_spawned}


def bad_progress():
    """Each bad call to progress() and the error it raised, as (type name, message)."""
    context = current_task()
    errors = []
    for args in (("3",), (None,), (True,), (-1,), (float("nan"),), (10**400,), (1, "10"), (1, -5), (1, None, 7)):
        try:
            context.progress(*args)
        except (TypeError, ValueError) as exc:
            errors.append((type(exc).__name__, str(exc)))
        else:
            errors.append(None)
    context.progress(1, 2, "x" * 10_000)
    return {"errors": errors, "note_length": len(context.last_progress.note)}


def nested_sync_then_running():
    """Run a task in sync mode inside this one; then which delivery this process says it runs, and whose
    context is current."""
    from django_q.runner import running_delivery
    from django_q.tasks import async_task

    async_task("tests.app.tasks.add", 1, 2, sync=True)
    return {"delivery": running_delivery(), "current": current_task().id}
