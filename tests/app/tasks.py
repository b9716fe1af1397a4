"""Task functions the tests enqueue."""

import asyncio
import os
import time


def add(a, b):
    return a + b


def fail(message="boom"):
    raise ValueError(message)


def sleep(seconds, value=None):
    time.sleep(seconds)
    return value


async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


def pid():
    return os.getpid()


def record_hook(task):
    """A hook: keeps the finished task's id and result in the Hooked table."""
    from tests.app.models import Hooked

    Hooked.objects.create(task_id=task.id, result=repr(task.result), success=task.success)


def bad_hook(task):
    raise RuntimeError("this hook always fails")
