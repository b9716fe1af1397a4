"""Unique tasks and non-overlapping schedules through real clusters, on both brokers.

Producers race as real processes; the key is freed by success, failure for
good and cancel; a schedule with overlap off skips an occurrence while its
previous run is queued or running, and runs again once it finished.
"""

from __future__ import annotations

import logging
import multiprocessing
from datetime import timedelta

import pytest
from django import db
from django.utils import timezone

from django_q.brokers import close_brokers, get_broker
from django_q.models import Schedule, Task
from django_q.tasks import async_task, cancel, fetch

from .conftest import wait_until
from .scheduler_env import ATOMIC, BASE, SPLIT, env, stepped  # noqa: F401 (env is a fixture)

PRODUCERS = 4


def _produce(barrier, ids, func: str, args: tuple) -> None:
    """A producer process: wait for the others, enqueue the same unique task, report its id."""
    try:
        barrier.wait(30)
        ids.put(async_task(func, *args, unique=True))
    finally:
        close_brokers()
        db.connections.close_all()


def test_unique_enqueues_from_four_processes_at_once_give_one_task(cluster, q_cluster):
    ctx = multiprocessing.get_context("fork")
    barrier, ids = ctx.Barrier(PRODUCERS), ctx.Queue()
    db.connections.close_all()  # the producers must not share this process's database sockets
    close_brokers()
    producers = [ctx.Process(target=_produce, args=(barrier, ids, "tests.app.tasks.add", (20, 22)))
                 for _ in range(PRODUCERS)]
    for producer in producers:
        producer.start()
    try:
        got = [ids.get(timeout=60) for _ in range(PRODUCERS)]
    finally:
        for producer in producers:
            producer.join(30)
            if producer.is_alive():
                producer.kill()
    assert [p.exitcode for p in producers] == [0] * PRODUCERS
    assert len(set(got)) == 1
    assert get_broker().size() == 1
    cluster(workers=1)
    assert fetch(got[0], wait=30_000).result == 42
    assert Task.objects.filter(func="tests.app.tasks.add").count() == 1


def released(task_id: str) -> bool:
    """Whether the broker forgot `task_id`: its key is free. That follows the save of its result."""
    return get_broker().lookup(task_id) is None


def test_success_frees_the_key(cluster):
    cluster(workers=1)
    first = async_task("tests.app.tasks.add", 1, 2, unique="sum")
    assert fetch(first, wait=30_000).result == 3
    wait_until(lambda: released(first))
    second = async_task("tests.app.tasks.add", 1, 2, unique="sum")
    assert second != first
    assert fetch(second, wait=30_000).result == 3


def test_a_retry_keeps_the_key_and_failure_for_good_frees_it(cluster):
    cluster(workers=1)
    first = async_task("tests.app.tasks.fail", "again", unique="f", retries=1, retry_delay=3)
    assert async_task("tests.app.tasks.fail", "again", unique="f") == first  # queued

    def waiting_for_its_retry():
        task = fetch(first, in_flight=True)
        return task is not None and task.status == "queued" and task.attempt_count == 1

    wait_until(waiting_for_its_retry)
    assert async_task("tests.app.tasks.fail", "again", unique="f") == first
    failed = fetch(first, wait=30_000)
    assert (failed.success, failed.attempt_count) == (False, 2)
    wait_until(lambda: released(first))
    second = async_task("tests.app.tasks.add", 2, 2, unique="f")
    assert second != first
    assert fetch(second, wait=30_000).result == 4


def test_a_running_unique_task_holds_its_key_until_cancelled(cluster, tmp_path):
    cluster(workers=1)
    gate = str(tmp_path / "never")
    first = async_task("tests.app.tasks.wait_for_file", gate, 30, unique=True)
    wait_until(lambda: (task := fetch(first, in_flight=True)) is not None and task.status == "running")
    assert async_task("tests.app.tasks.wait_for_file", gate, 30, unique=True) == first
    assert cancel(first)
    assert fetch(first, wait=30_000).status == "cancelled"
    wait_until(lambda: released(first))
    second = async_task("tests.app.tasks.wait_for_file", gate, 30, unique=True)
    assert second != first
    assert cancel(second)


# --- schedules with overlap off ---


@stepped(*ATOMIC, *SPLIT)
def test_an_occurrence_is_skipped_while_the_previous_run_is_queued_or_running(env, caplog):
    row = env.add(name="long", schedule_type="I", minutes=1, overlap=False)
    free = env.add(name="free", schedule_type="I", minutes=1)
    first, _ = env.scheduler().loop(BASE)  # due rows go by next run, then id
    with caplog.at_level(logging.INFO, logger="django_q"):
        assert len(env.scheduler().loop(BASE + timedelta(minutes=1))) == 1  # "free" only: the first is queued
    assert f"run due at {BASE + timedelta(minutes=1)} skipped: its previous run, task {first}," in caplog.text
    row.refresh_from_db()
    assert (row.task, row.next_run, row.repeats) == (first, BASE + timedelta(minutes=2), -2)

    broker = get_broker(config=env.config)
    deliveries = broker.dequeue(count=10)  # every task is running now
    assert broker.lookup(first).state == "leased"
    assert len(env.scheduler().loop(BASE + timedelta(minutes=2))) == 1
    row.refresh_from_db()
    assert (row.task, row.next_run, row.repeats) == (first, BASE + timedelta(minutes=3), -2)

    broker.ack([d.id for d in deliveries])  # they finished
    env.drain()
    again, _ = env.scheduler().loop(BASE + timedelta(minutes=3))
    row.refresh_from_db()
    assert again != first
    assert (row.task, row.next_run, row.repeats) == (again, BASE + timedelta(minutes=4), -3)
    free.refresh_from_db()
    assert free.repeats == -5  # four runs: with overlap on nothing is skipped


def test_a_schedule_without_overlap_skips_while_its_run_runs_and_runs_again_after(cluster, tmp_path, capfd):
    logger = logging.getLogger("django_q")
    level = logger.level
    logger.setLevel(logging.INFO)  # the cluster's processes are forked with it: the skip is logged
    try:
        cluster(workers=2)
    finally:
        logger.setLevel(level)
    gate = str(tmp_path / "go")
    row = Schedule.objects.create(func="tests.app.tasks.wait_for_file", args=repr(gate) + ", 30",
                                  schedule_type="I", minutes=1, overlap=False, next_run=timezone.now())
    first = wait_until(lambda: Schedule.objects.get(pk=row.pk).task)
    wait_until(lambda: (task := fetch(first, in_flight=True)) is not None and task.status == "running")

    Schedule.objects.filter(pk=row.pk).update(next_run=timezone.now())  # due again while the first runs
    wait_until(lambda: Schedule.objects.get(pk=row.pk).next_run > timezone.now())
    row.refresh_from_db()
    assert row.task == first and row.repeats == -2
    seen = []
    wait_until(lambda: seen.append(capfd.readouterr().err) or f"its previous run, task {first}," in "".join(seen),
               timeout=10)
    assert fetch(first, in_flight=True).status == "running"

    with open(gate, "w"):
        pass
    assert fetch(first, wait=30_000).result is True
    Schedule.objects.filter(pk=row.pk).update(next_run=timezone.now())
    second = wait_until(lambda: (task := Schedule.objects.get(pk=row.pk).task) != first and task)
    assert fetch(second, wait=30_000).result is True
    assert Task.objects.filter(group=str(row.pk)).count() == 2


@stepped(*ATOMIC, *SPLIT)
def test_the_previous_run_is_looked_for_in_the_queue_its_q_options_name(env):
    other = f"{env.config.name}-other"
    row = env.add(name="routed", schedule_type="I", minutes=1, overlap=False, args="",
                  kwargs=f"a=1, b=2, q_options={{'cluster': {other!r}}}")
    broker = get_broker(other, env.config)
    try:
        (first,) = env.scheduler().loop(BASE)
        assert broker.lookup(first) is not None  # routed to the other queue
        assert env.scheduler().loop(BASE + timedelta(minutes=1)) == []
        row.refresh_from_db()
        assert (row.task, row.next_run) == (first, BASE + timedelta(minutes=2))
    finally:
        broker.purge()


@stepped(*ATOMIC, *SPLIT)
def test_unique_among_a_schedules_q_options_is_left_out(env):
    """Each run a schedule records must go out: a run held back by a key would be recorded and never run."""
    env.add(name="keyed", schedule_type="I", minutes=1, args="", kwargs="a=1, b=2, q_options={'unique': 'k'}")
    broker = get_broker(config=env.config)
    (first,) = env.scheduler().loop(BASE)
    (second,) = env.scheduler().loop(BASE + timedelta(minutes=1))
    assert broker.lookup(first) is not None and broker.lookup(second) is not None
