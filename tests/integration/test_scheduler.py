"""The scheduler against real databases and brokers: claims, catch-up, time zones, clusters (bad rows and
crashes: test_scheduler_failures.py).

Most tests step `Scheduler.loop(now)` with explicit times. The claim and the
enqueue commit together when the broker is the database that holds the
schedules (orm variants: SQLite, PostgreSQL, MariaDB); with Redis they are
three steps (redis variants).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from django_q.brokers import close_brokers, get_broker
from django_q.cluster.pusher import SCHEDULER_DELAY
from django_q.cluster.scheduler import Scheduler
from django_q.conf import get_config
from django_q.models import Failure, Schedule, Task
from django_q.package import unpack
from django_q.tasks import async_task

from .conftest import wait_until
from .scheduler_env import ATOMIC, BASE, SPLIT, env, stepped  # noqa: F401 (env: the fixture)


@stepped(*ATOMIC, *SPLIT)
def test_four_schedulers_enqueue_each_occurrence_exactly_once(env):
    """Four schedulers (threads, one connection each) pass at the same instants; each run is enqueued once."""
    every_minute = [env.add(name=f"minutes-{i}", schedule_type="I", minutes=1) for i in range(10)]
    cron = [env.add(name=f"cron-{i}", schedule_type="C", cron="* * * * *") for i in range(5)]
    kept = [env.add(name=f"kept-{i}", repeats=1) for i in range(5)]
    deleted = [env.add(name=f"deleted-{i}") for i in range(5)]
    daily = [env.add(name=f"daily-{i}", schedule_type="D") for i in range(5)]
    rounds = [BASE + timedelta(minutes=i, seconds=5) for i in range(6)]
    barrier = threading.Barrier(4)
    enqueued: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            scheduler = env.scheduler()
            for now in rounds:
                barrier.wait(60)
                enqueued[n] += scheduler.loop(now)
                barrier.wait(60)  # a round ends for all before the next begins
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            barrier.abort()
        finally:
            close_brokers()
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and not any(t.is_alive() for t in threads)

    packages = env.drain()
    ids = [task_id for ids in enqueued for task_id in ids]
    assert sorted(p.id for p in packages) == sorted(ids) and len(set(ids)) == len(ids)
    per_group = Counter(p.group for p in packages)
    expected = {s.name: len(rounds) for s in every_minute + cron} | {s.name: 1 for s in kept + deleted + daily}
    assert per_group == expected
    left = sorted(env.rows.values_list("name", flat=True))
    assert left == sorted(s.name for s in every_minute + cron + kept + daily)  # the deleted ones gone, no more
    for row in env.rows.all():
        last = max((p for p in packages if p.group == row.name), key=lambda p: p.enqueued)
        assert row.task == last.id and row.enqueuing is None
        if row.name.startswith(("minutes", "cron")):
            assert (row.next_run, row.repeats) == (BASE + timedelta(minutes=6), -1 - len(rounds))
        elif row.name.startswith("kept"):
            assert (row.next_run, row.repeats) == (None, 0)
        else:
            assert (row.next_run, row.repeats) == (BASE + timedelta(days=1), -2)


@stepped(*ATOMIC, *SPLIT)
def test_the_task_carries_the_schedule(env):
    row = env.add(name="copy", func="math.copysign", args="2, -2", kwargs="", hook="tests.app.tasks.record_hook",
                  schedule_type="W")
    (task_id,) = env.scheduler().loop(BASE)
    (package,) = env.drain()
    assert (package.id, package.func, package.args, package.kwargs) == (task_id, "math.copysign", (2, -2), {})
    assert (package.hook, package.group) == ("tests.app.tasks.record_hook", "copy")
    row.refresh_from_db()
    assert (row.task, row.next_run, row.repeats) == (task_id, BASE + timedelta(weeks=1), -2)
    assert env.scheduler().loop(BASE + timedelta(days=6)) == []
    unnamed = env.add(kwargs="a=1, b=2", func="tests.app.tasks.add", args="")
    env.scheduler().loop(BASE)
    assert [(p.kwargs, p.group) for p in env.drain()] == [({"a": 1, "b": 2}, str(unnamed.pk))]


@stepped(*ATOMIC, *SPLIT)
def test_only_this_clusters_schedules_and_shared_ones_run(env):
    env.add(name="mine", cluster=env.config.name)
    env.add(name="shared")
    env.add(name="elsewhere", cluster="another-cluster")
    env.scheduler().loop(BASE)
    assert sorted(p.group for p in env.drain()) == ["mine", "shared"]


@stepped(*ATOMIC, *SPLIT)
@pytest.mark.parametrize("catch_up", [True, False])
def test_catch_up(env, catch_up):
    """After five hours down: with catch_up one run for all the missed ones, without it none."""
    hourly = env.add(name="hourly", schedule_type="H", next_run=BASE - timedelta(hours=5), repeats=10)
    cron = env.add(name="cron", schedule_type="C", cron="*/10 * * * *", next_run=BASE - timedelta(hours=5))
    now = BASE + timedelta(minutes=5)
    ran = env.scheduler(catch_up=catch_up).loop(now)
    assert len(ran) == (2 if catch_up else 0)
    assert len(env.drain()) == len(ran)
    hourly.refresh_from_db()
    cron.refresh_from_db()
    assert (hourly.next_run, hourly.repeats) == (BASE + timedelta(hours=1), 9 if catch_up else 10)
    assert cron.next_run == BASE + timedelta(minutes=10)
    assert env.scheduler(catch_up=catch_up).loop(now) == []


@stepped(*ATOMIC)
def test_a_daily_schedule_stays_at_nine_local_through_dst(env):
    berlin = ZoneInfo("Europe/Berlin")
    with override_settings(TIME_ZONE="Europe/Berlin"):
        row = env.add(schedule_type="D", next_run=datetime(2024, 3, 29, 9, 0, tzinfo=berlin))
        cron = env.add(schedule_type="C", cron="0 9 * * *", next_run=datetime(2024, 3, 29, 9, 0, tzinfo=berlin))
        scheduler = env.scheduler()
        seen = []
        for _ in range(4):
            row.refresh_from_db()
            scheduler.loop(row.next_run + timedelta(seconds=1))
            seen.append(row.next_run.astimezone(berlin).strftime("%m-%d %H:%M%z"))
        cron.refresh_from_db()
    assert seen == ["03-29 09:00+0100", "03-30 09:00+0100", "03-31 09:00+0200", "04-01 09:00+0200"]
    assert cron.next_run == datetime(2024, 4, 2, 9, 0, tzinfo=berlin)


@stepped(*ATOMIC, *SPLIT)
def test_monthly_keeps_the_day_through_short_months(env):
    row = env.add(schedule_type="M", next_run=datetime(2024, 1, 31, 9, 0, tzinfo=UTC))
    scheduler = env.scheduler()
    seen = []
    for _ in range(4):
        row.refresh_from_db()
        seen.append(row.next_run.date().isoformat())
        scheduler.loop(row.next_run)
    assert seen == ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
    row.refresh_from_db()
    assert row.anchor == datetime(2024, 1, 31, 9, 0, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_without_use_tz_times_are_local(queue_name):
    """USE_TZ off: the database holds naive TIME_ZONE times, and a daily run stays at 09:00 local."""
    conf = {"name": queue_name, "workers": 1, "poll": 0.02}
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Berlin", Q_CLUSTER=conf):
        row = Schedule.objects.create(func="tests.app.tasks.add", args="1, 1", schedule_type="D",
                                      next_run=datetime(2024, 3, 30, 9, 0))
        scheduler = Scheduler(get_config())
        scheduler.loop(datetime(2024, 3, 30, 9, 0, 1))
        row.refresh_from_db()
        assert row.next_run == datetime(2024, 3, 31, 9, 0)
        scheduler.loop(datetime(2024, 3, 31, 9, 0, 1))
        row.refresh_from_db()
        assert row.next_run == datetime(2024, 4, 1, 9, 0)
        get_broker().purge()
        close_brokers()


# Real clusters: sentinel, pusher (with the scheduler thread) and workers as processes.


def test_four_clusters_run_each_schedule_once(cluster, q_cluster):
    clusters = [cluster(workers=1) for _ in range(4)]
    wait_until(lambda: all(c.view().pusher.alive for c in clusters))
    time.sleep(1.0 + SCHEDULER_DELAY)  # every scheduler is past its start and polling
    now = timezone.now()
    rows = Schedule.objects.bulk_create(
        [Schedule(name=f"once-{i}", func="tests.app.tasks.add", args=f"{i}, 1", repeats=1, next_run=now)
         for i in range(12)]
        + [Schedule(name=f"hourly-{i}", func="tests.app.tasks.add", args="1, 1", schedule_type="H",
                    next_run=now - timedelta(hours=3, minutes=10)) for i in range(4)]
        + [Schedule(name="failing", func="tests.app.tasks.fail", kwargs="message='scheduled'", schedule_type="D",
                    next_run=now)]
        # Saved without validation: the worker cannot import it.
        + [Schedule(name="missing", func="tests.app.tasks.no_such_task", schedule_type="D", next_run=now)]
    )
    groups = [row.name for row in rows]
    wait_until(lambda: Task.objects.filter(group__in=groups).count() >= len(groups), timeout=60)
    time.sleep(3.0)  # schedulers pass every second: a second run would be here by now
    assert Counter(Task.objects.filter(group__in=groups).values_list("group", flat=True)) == dict.fromkeys(groups, 1)
    for row in Schedule.objects.all():
        task = row.last_run()
        assert task is not None and task.group == row.name
        if row.name.startswith("once"):
            assert (row.next_run, row.repeats, row.result(), row.success()) == (None, 0, int(row.name[5:]) + 1, True)
        elif row.name.startswith("hourly"):
            assert row.next_run > now and (row.next_run - (now - timedelta(hours=3, minutes=10))) % timedelta(
                hours=1) == timedelta(0)
            assert row.repeats == -2 and row.result() == 2
        else:  # the failure is recorded, and the schedule goes on
            assert row.success() is False
            assert ("ValueError: scheduled" if row.name == "failing" else "no_such_task") in row.result()
            assert row.next_run == now + timedelta(days=1) and row.repeats == -2
    assert Failure.objects.filter(group__in=["failing", "missing"]).count() == 2


def test_a_replaced_pusher_brings_a_new_scheduler(cluster):
    running = cluster()
    first = wait_until(lambda: running.view().pusher.alive and running.view().pusher.pid)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: running.view().pusher.pid != first and running.view().pusher.alive)
    row = Schedule.objects.create(func="tests.app.tasks.add", args="2, 3", repeats=1)
    wait_until(lambda: Schedule.objects.get(pk=row.pk).result() == 5)
    replacement = running.view().pusher.pid
    started = time.monotonic()
    running.stop()
    last = running.view().known[replacement]  # as the sentinel saw it last, having waited for it
    assert last.exitcode == 0  # stopped gracefully, its scheduler's pass ended
    assert time.monotonic() - started < 10


def test_a_graceful_stop_ends_the_scheduler_at_once_while_the_pusher_goes_on_saving(cluster, tmp_path):
    """What SIGTERM to the cluster does: no new schedule runs, the running task's result is still saved.

    The SIGTERM must come once the task runs: a task not yet fetched when the
    stop begins is left in the queue, unrun, for the next start.
    """
    running = cluster()
    first = Schedule.objects.create(func="tests.app.tasks.add", args="1, 1", repeats=1)
    wait_until(lambda: Schedule.objects.get(pk=first.pk).result() == 2)  # the scheduler thread is up
    # A folder of the task's own: tmp_path holds the sentinel's view file (Running) from the start.
    ran = tmp_path / "ran"
    ran.mkdir()
    task_id = async_task("tests.app.tasks.touch_then_sleep", str(ran), 5)
    wait_until(lambda: any(ran.iterdir()))  # it runs
    os.kill(running.pid, signal.SIGTERM)  # the sentinel passes it on to the pusher
    time.sleep(1.5)  # past the scheduler's pass under way (INTERVAL is 1 s)
    later = Schedule.objects.create(func="tests.app.tasks.add", args="3, 3", repeats=1)
    wait_until(lambda: Task.get_task(task_id) is not None)  # saved during the stop
    assert Schedule.objects.get(pk=later.pk).task is None  # never enqueued: the scheduler had ended
    running.stop()


@stepped(*ATOMIC[:2], *SPLIT[:1])
def test_a_cluster_of_several_queues_runs_the_schedules_of_each_into_their_own_queue(env, queue_name):
    other = f"{queue_name}-low"
    every = {"schedule_type": "I", "minutes": 1}  # kept after the run, with the id of its task
    env.add(name="mine", cluster=queue_name, **every)
    env.add(name="low", cluster=other, **every)
    env.add(name="anyone", **every)
    env.add(name="elsewhere", cluster=f"{queue_name}-unserved", **every)
    try:
        enqueued = env.scheduler(queues=(other, queue_name)).loop(BASE)
        assert len(enqueued) == 3
        rows = {row.name: row.task for row in env.rows.all()}
        assert rows["elsewhere"] is None
        in_low = get_broker(other, env.config).dequeue(count=10)
        assert [unpack(d.payload, env.config.package_limit).id for d in in_low] == [rows["low"]]
        assert sorted(p.id for p in env.drain()) == sorted([rows["mine"], rows["anyone"]])
    finally:
        get_broker(other, env.config).purge()
