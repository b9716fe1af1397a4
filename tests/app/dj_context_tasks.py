"""django.tasks tasks (Django 6+) that look at Django Q's context beside Django's own, and report progress."""

from django.tasks import task

from . import context_tasks


@task(takes_context=True)
def report_then_wait(context, go, done, total=None, note=""):
    """Django's context and Django Q's side by side; progress shows while the task waits for `go`."""
    ours = context_tasks.report_then_wait(go, done, total, note)
    return {**ours, "django_id": context.task_result.id, "django_attempt": context.attempt}


@task
async def async_report_then_wait(go, done, total=None, note=""):
    return await context_tasks.async_report_then_wait(go, done, total, note)
