"""Make the old project's database as django-q left it: finished tasks, schedules, queued tasks (both brokers)."""

import datetime
import json
import os
import sys
import uuid

import django

django.setup()

import dump  # noqa: E402
from django.core import signing  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_q.brokers.redis_broker import Redis  # noqa: E402
from django_q.signing import PickleSerializer  # noqa: E402

from django_q.brokers import get_broker  # noqa: E402
from django_q.models import Schedule, Task  # noqa: E402
from django_q.tasks import async_task, schedule  # noqa: E402


def failed_task() -> str:
    """A failure as their cluster saves one (their sync mode raises instead of saving it)."""
    task_id = uuid.uuid4().hex
    Task.objects.create(
        id=task_id, name="failed-once", func="legacy_tasks.boom", args=(), kwargs={}, group="finished",
        result="boom from django-q : Traceback (most recent call last): ...", started=timezone.now(),
        stopped=timezone.now(), success=False, attempt_count=2,
    )
    return task_id


call_command("migrate", verbosity=0)
past = timezone.now() - datetime.timedelta(minutes=1)
later = timezone.now() + datetime.timedelta(days=3)
done = {
    "success": async_task("legacy_tasks.add", 2, 3, sync=True, group="finished"),
    "failure": failed_task(),
    "named": async_task("legacy_tasks.add", 1, 1, sync=True, task_name="nightly"),
    "named_again": async_task("legacy_tasks.add", 2, 2, sync=True, task_name="nightly"),
}
schedules = {
    "minutes": schedule("legacy_tasks.mark", "minutes", name="every five", schedule_type=Schedule.MINUTES,
                        minutes=5, repeats=3, next_run=past).id,
    "cron": schedule("legacy_tasks.mark", "cron", name="cron", schedule_type=Schedule.CRON, cron="*/10 * * * *",
                     repeats=-1, next_run=past, cluster=os.environ["DQ_LEGACY_NAME"]).id,
    "daily_hook": schedule("legacy_tasks.add", 20, b=22, name="daily", hook="legacy_tasks.mark",
                           schedule_type=Schedule.DAILY, repeats=-1, next_run=later).id,
    # Options of the task in q_options, among the kwargs (cached: a django-q option we do not have).
    "once": schedule("legacy_tasks.mark", "once", name="once", schedule_type=Schedule.ONCE, repeats=1,
                     q_options={"group": "once-group", "timeout": 60, "cached": False},
                     next_run=past).id,
}
# As if their cluster was down when the cron schedule came due: it runs on ours.
Schedule.objects.filter(id=schedules["cron"]).update(next_run=past)
queued = {
    "orm": async_task("legacy_tasks.mark", "orm-queued", group="queued"),
    "orm_chain": async_task("legacy_tasks.mark", "orm-chain-1", group="queued",
                            chain=[("legacy_tasks.mark", ("orm-chain-2",))]),
    "redis": async_task("legacy_tasks.mark", "redis-queued", group="queued", broker=Redis()),
}
# Packages signed with another key: they must never run.
forged = signing.dumps({"id": "f" * 32, "name": "forged", "func": "legacy_tasks.mark", "args": ("forged",),
                        "kwargs": {}}, key="not-the-secret-key", salt=os.environ["DQ_LEGACY_NAME"],
                       serializer=PickleSerializer)
get_broker().enqueue(forged)
Redis().enqueue(forged)
json.dump({"done": done, "schedules": schedules, "queued": queued, "rows": dump.rows()}, sys.stdout)
