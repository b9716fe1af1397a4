"""The tutorial's calls: enqueue, read the result, a hook, a group, a schedule."""

from django_q.models import Schedule
from django_q.tasks import async_task, result, result_group, schedule


def first_task():
    task_id = async_task("myapp.tasks.add", 2, 3)
    return result(task_id, wait=10_000)  # 5, once a cluster ran it (wait up to 10 s)


def with_a_hook():
    return async_task("myapp.tasks.add", 2, 3, hook="myapp.tasks.announce")


def a_group():
    for n in range(4):
        async_task("myapp.tasks.add", n, n, group="doubles")
    return result_group("doubles", count=4, wait=10_000)  # [0, 2, 4, 6] in some order


def a_schedule():
    return schedule("myapp.tasks.nightly_report", name="nightly report",
                    schedule_type=Schedule.CRON, cron="0 3 * * *")
