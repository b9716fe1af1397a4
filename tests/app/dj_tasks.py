"""django.tasks tasks (Django 6+) run by the cluster through django_q.tasks_backend."""

import asyncio

from django.dispatch import receiver
from django.tasks import task
from django.tasks.signals import task_finished, task_started

from django_q.tasks_backend import retry_policy

from . import tasks


@task
def add(a, b):
    return a + b


@task
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task(takes_context=True)
def with_context(context, value):
    return {"value": value, "id": context.task_result.id, "attempt": context.attempt}


@task
def fail(message="boom"):
    raise ValueError(message)


@task
def echo(*args, **kwargs):
    return {"args": args, "kwargs": kwargs}


@task
def not_json():
    return object()


@task
def record_order(key, value):
    return tasks.record_order(key, value)


@task
def sleep(key, seconds):
    return tasks.mark_then_sleep(key, seconds, "slept")


@task
@retry_policy(retries=3, retry_delay=0.1, retry_on=[ValueError])
def flaky(key, failures):
    return tasks.flaky(key, failures)


@receiver(task_started, dispatch_uid="tests.dj_tasks.started")
def _started(sender, task_result, **kwargs):
    from tests.app.models import Hooked

    Hooked.objects.create(task_id=task_result.id, result=f"started {sender.__name__}", success=True)


@receiver(task_finished, dispatch_uid="tests.dj_tasks.finished")
def _finished(sender, task_result, **kwargs):
    from tests.app.models import Hooked

    Hooked.objects.create(task_id=task_result.id, result=f"finished {task_result.status}", success=True)
