"""Enqueue or read tasks for the acceptance tests: `python -m tests.acceptance.drive COMMAND ...`."""

import json
import sys

import django

django.setup()

from django_q.brokers import get_broker  # noqa: E402
from django_q.models import Task  # noqa: E402
from django_q.tasks import async_many, async_task, count_group  # noqa: E402


def main(command: str, *args: str) -> object:
    if command == "enqueue":
        func, count, group = args[0], int(args[1]), args[2]
        call_args = json.loads(args[3]) if len(args) > 3 else []
        return [async_task(func, *call_args, group=group) for _ in range(count)]
    if command == "enqueue-with":  # func, group, JSON args, JSON options (q_options)
        func, group, call_args, options = args[0], args[1], json.loads(args[2]), json.loads(args[3])
        return async_task(func, *call_args, q_options={"group": group, **options})
    if command == "enqueue-many":
        func, count, group = args[0], int(args[1]), args[2]
        call_args = tuple(json.loads(args[3])) if len(args) > 3 else ()
        return len(async_many(func, [call_args] * count, group=group))
    if command == "count":
        return {"success": count_group(args[0]), "failure": count_group(args[0], failures=True),
                "queued": get_broker().size()}
    if command == "results":
        return [t.result for t in Task.objects.filter(group=args[0]).order_by("started")]
    if command == "purge":
        get_broker().purge()
        return "ok"
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
