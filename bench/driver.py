"""Runs inside one system's venv (cwd bench/): prepare its store, or enqueue tasks and time it.

    python driver.py SYSTEM migrate
    python driver.py SYSTEM enqueue KIND N [--interval S] [--reset] [--max-seconds S]  -> {"seconds": ..., "n": sent}
    python driver.py SYSTEM bulk N [--reset]                          -> {"seconds": ..., "n": N} or {"todo": why}

SYSTEM is django-q, django-q2, celery, rq, huey, dramatiq, saq, procrastinate or
django-tasks-db; KIND is noop
(W1/W2), sleepy (W5) or latency (W3, the argument is time.time() at the call).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
KINDS = ("noop", "sleepy", "latency")


def django_senders(reset: bool) -> dict[str, Callable]:
    import django

    django.setup()
    if reset:
        reset_tables()
    from django_q.brokers import get_broker
    from django_q.tasks import async_task

    # The broker object is made before the clock starts, as the peers' modules
    # make theirs at import: its first use would otherwise import redis-py
    # (about 50 ms) inside the timed calls. Neither system connects here.
    get_broker()

    # Dotted paths, the cheapest form for both Django Q systems.
    return {kind: (lambda arg, _path=f"jobs.{kind}": async_task(_path, arg)) for kind in KINDS}


def reset_tables(prefix: str = "django_q_") -> None:
    """Empty every table of the system (django_q_: queue, results, schedules) in the default database."""
    from django.db import connection

    tables = [t for t in connection.introspection.table_names() if t.startswith(prefix)]
    if not tables:
        raise SystemExit(f"no table named {prefix}* in the database: migrate first")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f'DELETE FROM "{table}"')


def django_tasks_senders(reset: bool) -> dict[str, Callable]:
    """django-tasks-db: Django 6's Task.enqueue on the database backend."""
    import django

    django.setup()
    if reset:
        reset_tables("django_tasks_database_")  # the app's label
    from peers import django_tasks_app as m

    return {kind: getattr(m, kind).enqueue for kind in KINDS}


def procrastinate_senders(reset: bool) -> dict[str, Callable]:
    """procrastinate: Task.defer inside the app's open connector (its documented sync path)."""
    from peers import procrastinate_app as m

    m.app.open()
    if reset:
        import psycopg

        with psycopg.connect(os.environ["BENCH_PG_DSN"], autocommit=True) as conn:
            conn.execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")
    names = {"noop": "i", "sleepy": "i", "latency": "enqueued"}  # procrastinate passes keyword arguments
    return {kind: (lambda arg, _t=getattr(m, kind), _k=names[kind]: _t.defer(**{_k: arg})) for kind in KINDS}


def saq_senders() -> dict[str, Callable]:
    """SAQ: Queue.enqueue (a coroutine), each call run to completion on one event loop."""
    import asyncio

    from peers import saq_app as m

    loop = asyncio.new_event_loop()
    names = {"noop": "i", "sleepy": "i", "latency": "enqueued"}
    extra = m.job_options()

    def sender(kind: str) -> Callable:
        return lambda arg: loop.run_until_complete(m.queue.enqueue(kind, **{names[kind]: arg}, **extra))

    return {kind: sender(kind) for kind in KINDS}


def senders(system: str, reset: bool) -> dict[str, Callable]:
    """kind -> a function that enqueues one task with one argument."""
    if system in ("django-q", "django-q2"):
        return django_senders(reset)
    if system == "celery":
        from peers import celery_app as m

        return {kind: getattr(m, kind).delay for kind in KINDS}
    if system == "huey":
        from peers import huey_app as m

        return {kind: getattr(m, kind) for kind in KINDS}
    if system == "dramatiq":
        from peers import dramatiq_app as m

        return {kind: getattr(m, kind).send for kind in KINDS}
    if system == "saq":
        return saq_senders()
    if system == "procrastinate":
        return procrastinate_senders(reset)
    if system == "django-tasks-db":
        return django_tasks_senders(reset)
    if system == "rq":
        from redis import Redis
        from rq import Queue

        import jobs

        queue = Queue("bench", connection=Redis.from_url(BROKER_URL))
        return {kind: (lambda arg, _f=getattr(jobs, kind): queue.enqueue(_f, arg)) for kind in KINDS}
    raise SystemExit(f"unknown system {system}")


def enqueue(system: str, kind: str, n: int, interval: float, reset: bool, max_seconds: float) -> dict:
    """Enqueue n tasks (fewer if max_seconds ran out first: a slow system's W2 then drains what it got)."""
    send = senders(system, reset)[kind]
    start = time.perf_counter()
    sent = 0
    if kind == "latency":
        for sent in range(1, n + 1):
            send(time.time())
            time.sleep(interval)
    else:
        stop = start + max_seconds
        for i in range(n):
            send(i)
            sent = i + 1
            if sent % 100 == 0 and time.perf_counter() > stop:
                break
    return {"seconds": time.perf_counter() - start, "n": sent}


def bulk(system: str, n: int, reset: bool) -> dict:
    """Time one `django_q.tasks.async_many` call of n no-op tasks (this project only)."""
    if system != "django-q":
        return {"todo": "no bulk path measured for this system"}
    django_senders(reset)
    from django_q import tasks

    many = getattr(tasks, "async_many", None)
    if many is None:
        return {"todo": "django_q.tasks has no public bulk API (async_many); only enqueue_packages, internal"}
    start = time.perf_counter()
    many("jobs.noop", [(i,) for i in range(n)])
    return {"seconds": time.perf_counter() - start, "n": n}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("system")
    parser.add_argument("action", choices=["migrate", "enqueue", "bulk"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--reset", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=float("inf"))
    opts = parser.parse_args(argv)
    if opts.action == "migrate" and opts.system == "procrastinate":
        from peers import procrastinate_app as m

        with m.app.open():
            m.app.schema_manager.apply_schema()
        return {"ok": True}
    if opts.action == "migrate":
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        return {"ok": True}
    if opts.action == "bulk":
        return bulk(opts.system, int(opts.args[0]), opts.reset)
    kind, n = opts.args[0], int(opts.args[1])
    return enqueue(opts.system, kind, n, opts.interval, opts.reset, opts.max_seconds)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
