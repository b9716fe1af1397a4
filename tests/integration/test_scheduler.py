"""The scheduler against real databases and brokers: claims, catch-up, time zones, bad rows, crashes, clusters.

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
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from django_q import reporters
from django_q import signals as q_signals
from django_q.brokers import close_brokers, get_broker
from django_q.cluster import scheduler as scheduler_module
from django_q.cluster.pusher import SCHEDULER_DELAY
from django_q.cluster.scheduler import CLAIM_HOLD, Scheduler
from django_q.conf import Config, get_config
from django_q.exceptions import BrokerConnectionError
from django_q.models import Failure, Schedule, Task
from django_q.package import TaskPackage, unpack
from django_q.tasks import async_task
from tests.unit.helpers import REPORTER_DIST, received, reports

from .conftest import wait_until


def _db(*aliases: str) -> pytest.MarkDecorator:
    return pytest.mark.django_db(transaction=True, databases=["default", *aliases])


ATOMIC = [
    pytest.param(("default", "orm"), id="sqlite-orm", marks=_db()),
    pytest.param(("pg", "orm"), id="pg-orm", marks=_db("pg")),
    pytest.param(("mysql", "orm"), id="mysql-orm", marks=_db("mysql")),
]
SPLIT = [
    pytest.param(("default", "redis"), id="sqlite-redis", marks=_db()),
    pytest.param(("pg", "redis"), id="pg-redis", marks=_db("pg")),
]
BASE = datetime(2031, 1, 6, 12, 0, tzinfo=UTC)  # the clock of the stepped tests: far from the real one


@dataclass
class Env:
    """Where the schedules live, and the cluster settings of the schedulers under test."""

    alias: str
    config: Config

    @property
    def rows(self):
        return Schedule.objects.using(self.alias)

    def add(self, **fields) -> Schedule:
        fields.setdefault("func", "tests.app.tasks.add")
        fields.setdefault("args", "1, 2")
        fields.setdefault("next_run", BASE)
        return self.rows.create(**fields)

    def scheduler(self, **overrides) -> Scheduler:
        return Scheduler(replace(self.config, **overrides), alias=self.alias)

    def drain(self) -> list[TaskPackage]:
        """Take every package out of the broker."""
        broker = get_broker(config=self.config)
        deliveries = broker.dequeue(count=10_000, timeout=0)
        broker.ack([d.id for d in deliveries])
        return [unpack(d.payload, self.config.package_limit) for d in deliveries]


@pytest.fixture
def env(request, queue_name) -> Iterator[Env]:
    alias, kind = request.param
    conf = {"name": queue_name, "workers": 1, "retry": 5, "poll": 0.02}
    if kind == "redis":
        conf["redis"] = settings.REDIS_URL
    else:
        conf["orm"] = alias
    with override_settings(Q_CLUSTER=conf):
        config = get_config()
        yield Env(alias, config)
        get_broker(config=config).purge()
        close_brokers()


def stepped(*params):
    return pytest.mark.parametrize("env", params, indirect=True)


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


@stepped(*ATOMIC, *SPLIT)
def test_bad_rows_are_stopped_with_a_failure_and_never_crash_the_pass(env, caplog):
    good = env.add(name="good", repeats=1)
    bad = {
        "cron": env.add(name="bad-cron", schedule_type="C", cron="every tuesday"),
        "never": env.add(name="never", schedule_type="C", cron="0 0 30 2 *"),
        "minutes": env.add(name="no-minutes", schedule_type="I"),
        "args": env.add(name="bad-args", args="__import__('os').getcwd()"),
        "kwargs": env.add(name="bad-kwargs", kwargs="x=1) or (2"),
        "func": env.add(name="bad-func", func="no dots"),
        "type": env.add(name="bad-type", schedule_type="ZZ"),
    }
    scheduler = env.scheduler()
    ran = scheduler.loop(BASE)
    assert [p.group for p in env.drain()] == ["good"] and len(ran) == 1
    for row in bad.values():
        row.refresh_from_db()
        assert row.next_run is None and row.success() is False
        assert row.result().startswith(f"schedule {row.name} (id {row.pk}) cannot run")
        assert Failure.objects.filter(id=row.task).exists()
    assert "cannot run" in caplog.text
    caplog.clear()
    assert scheduler.loop(BASE + timedelta(minutes=1)) == []  # stopped rows are not tried again
    assert "cannot run" not in caplog.text
    good.refresh_from_db()
    assert (good.next_run, good.repeats, good.enqueuing) == (None, 0, None)
    fixed = bad["cron"]
    fixed.cron, fixed.next_run = "0 * * * *", BASE
    fixed.full_clean()
    fixed.save()
    assert len(scheduler.loop(BASE)) == 1


@stepped(*ATOMIC, *SPLIT)
def test_a_row_written_by_sql_with_os_system_never_runs_and_is_logged(env, caplog):
    planted = {
        "func": env.add(name="planted", args="1, 2"),
        "hook": env.add(name="planted-hook", args="1, 2"),
        "re-export": env.add(name="planted-logging", args="1, 2"),
    }
    table = connections[env.alias].ops.quote_name(Schedule._meta.db_table)
    with connections[env.alias].cursor() as cursor:  # around full_clean(), as an attacker with SQL would
        for row, (func, hook) in zip(planted.values(), [("os.system", None),
                                                        ("tests.app.tasks.add", "builtins.exec"),
                                                        ("logging.os.system", None)]):
            cursor.execute(f"UPDATE {table} SET func = %s, hook = %s, args = %s WHERE id = %s",
                           [func, hook, "'touch /tmp/owned'", row.pk])
    assert env.scheduler().loop(BASE) == []
    assert env.drain() == []
    for row in planted.values():
        row.refresh_from_db()
        assert row.next_run is None and row.success() is False
        assert "nobody may schedule" in row.result()
    assert caplog.text.count("nobody may schedule") == 3


@stepped(*ATOMIC)
def test_a_stopped_row_is_reported_and_signalled_as_a_failure(env, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(REPORTER_DIST)  # the test error reporter plugin, installed
    monkeypatch.setattr(reporters, "_made", None)
    bad = env.add(name="bad-cron", schedule_type="C", cron="every tuesday")
    scheduler = env.scheduler(error_reporter={"filelog": {"path": str(tmp_path / "reports")}})
    with received(q_signals.task_failed) as calls:
        assert scheduler.loop(BASE) == []
    bad.refresh_from_db()
    [call] = calls
    assert (call["task"].id, call["task"].success) == (bad.task, False)
    [report] = reports(tmp_path / "reports")
    assert report["type"] == "ScheduleError" and "schedule bad-cron" in report["message"]


@stepped(*ATOMIC)
def test_an_unexpected_error_leaves_the_row_alone_for_a_while(env, monkeypatch, caplog):
    flaky = env.add(name="flaky", schedule_type="D")
    env.add(name="fine", schedule_type="D")
    real = scheduler_module.schedule_call

    def schedule_call(row):
        if row.name == "flaky":
            raise RuntimeError("surprise")
        return real(row)

    monkeypatch.setattr(scheduler_module, "schedule_call", schedule_call)
    scheduler = env.scheduler()
    def logged() -> int:
        return sum("schedule flaky" in record.getMessage() for record in caplog.records)

    assert len(scheduler.loop(BASE)) == 1
    assert logged() == 1
    assert scheduler.loop(BASE + timedelta(seconds=1)) == []  # paused, not retried in a hot loop
    assert logged() == 1
    flaky.refresh_from_db()
    assert flaky.next_run == BASE  # untouched: it runs once the problem is gone
    monkeypatch.setattr(scheduler_module, "schedule_call", real)
    assert len(env.scheduler().loop(BASE + timedelta(seconds=2))) == 1


@stepped(*ATOMIC)
def test_an_interrupted_pass_enqueues_nothing_and_loses_nothing(env, monkeypatch):
    """Claim and enqueue commit together: a failure after the broker's INSERT rolls both back."""
    row = env.add(schedule_type="D")
    real = scheduler_module.enqueue

    def enqueue_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise BrokerConnectionError("killed after the enqueue")

    monkeypatch.setattr(scheduler_module, "enqueue", enqueue_then_die)
    with pytest.raises(BrokerConnectionError):
        env.scheduler().loop(BASE)
    row.refresh_from_db()
    assert (row.next_run, row.task, row.repeats) == (BASE, None, -1)
    assert env.drain() == []
    monkeypatch.setattr(scheduler_module, "enqueue", real)
    (task_id,) = env.scheduler().loop(BASE + timedelta(seconds=1))
    assert [p.id for p in env.drain()] == [task_id]


@stepped(*SPLIT)
def test_a_claim_whose_enqueue_failed_runs_after_the_hold_with_the_same_id(env, monkeypatch):
    row = env.add(schedule_type="M", next_run=datetime(2031, 1, 31, 9, 0, tzinfo=UTC))
    now = datetime(2031, 1, 31, 9, 0, 1, tzinfo=UTC)

    def broker_down(*args, **kwargs):
        raise BrokerConnectionError("down")

    monkeypatch.setattr(scheduler_module, "enqueue", broker_down)
    with pytest.raises(BrokerConnectionError):
        env.scheduler().loop(now)
    monkeypatch.undo()
    row.refresh_from_db()
    claimed = row.enqueuing
    assert claimed and row.next_run == now + CLAIM_HOLD
    assert env.scheduler().loop(now + CLAIM_HOLD - timedelta(seconds=1)) == []  # held
    assert env.scheduler(catch_up=False).loop(now + CLAIM_HOLD) == [claimed]  # a delay, not a loss
    assert [p.id for p in env.drain()] == [claimed]
    row.refresh_from_db()
    assert (row.task, row.enqueuing, row.repeats) == (claimed, None, -2)
    assert row.next_run == datetime(2031, 2, 28, 9, 0, tzinfo=UTC)  # still the series of the 31st
    assert len(env.scheduler().loop(row.next_run)) == 1
    row.refresh_from_db()
    assert row.next_run == datetime(2031, 3, 31, 9, 0, tzinfo=UTC)


@stepped(*SPLIT)
@pytest.mark.parametrize("ran", [False, True])
def test_a_scheduler_killed_after_the_enqueue_repeats_only_the_same_id(env, monkeypatch, ran):
    row = env.add(schedule_type="D")

    def killed(self, *args, **kwargs):
        raise SystemExit("killed before the claim was settled")

    monkeypatch.setattr(Scheduler, "_settle", killed)
    with pytest.raises(SystemExit):
        env.scheduler().loop(BASE)
    monkeypatch.undo()
    (first,) = env.drain()
    if ran:
        Task.objects.create(id=first.id, name=first.name, func=first.func, started=timezone.now(),
                            stopped=timezone.now())
    assert env.scheduler().loop(BASE + CLAIM_HOLD + timedelta(seconds=1)) == [first.id]
    assert [p.id for p in env.drain()] == ([] if ran else [first.id])
    row.refresh_from_db()
    assert (row.task, row.enqueuing, row.next_run) == (first.id, None, BASE + timedelta(days=1))


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
    """What SIGTERM to the cluster does: no new schedule runs, the running task's result is still saved."""
    running = cluster()
    first = Schedule.objects.create(func="tests.app.tasks.add", args="1, 1", repeats=1)
    wait_until(lambda: Schedule.objects.get(pk=first.pk).result() == 2)  # the scheduler thread is up
    task_id = async_task("tests.app.tasks.touch_then_sleep", str(tmp_path), 5)
    wait_until(lambda: any(tmp_path.iterdir()))  # it runs
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
