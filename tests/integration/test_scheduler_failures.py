"""The scheduler meeting bad rows, errors and crashes: stopped with a failure, left alone a while, or repeated
with the same task id; never a pass that crashes or a task lost or run twice under two ids.

Stepped like tests/integration/test_scheduler.py (`Scheduler.loop(now)` with explicit times).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections
from django.utils import timezone

from django_q import reporters
from django_q import signals as q_signals
from django_q.cluster import scheduler as scheduler_module
from django_q.cluster.scheduler import CLAIM_HOLD, Scheduler
from django_q.exceptions import BrokerConnectionError
from django_q.models import Failure, Schedule, Task
from tests.unit.helpers import REPORTER_DIST, received, reports

from .scheduler_env import ATOMIC, BASE, SPLIT, env, stepped  # noqa: F401 (env: the fixture)


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
