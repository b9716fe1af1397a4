"""A task's life through a real cluster, on both brokers: status before the result, cancel,
priority order, retry with backoff, deferred tasks and enqueue on commit."""

from __future__ import annotations

import time

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_q.models import Task
from django_q.tasks import async_many, async_task, cancel, fetch, queue_size, result
from tests.app.models import Hooked

from .conftest import wait_until


@pytest.fixture
def key(queue_name, redis_client):
    """A Redis key of this test's own (db 14), deleted after."""
    yield f"{queue_name}:key"
    redis_client.delete(f"{queue_name}:key")


def status(task_id: str) -> str | None:
    task = fetch(task_id, in_flight=True)
    return None if task is None else task.status


def test_status_goes_queued_running_succeeded(cluster, q_cluster):
    task_id = async_task("tests.app.tasks.mark_then_sleep", "s1", 1.0, "slept")
    assert fetch(task_id) is None  # as in django-q: nothing until it finished
    queued = fetch(task_id, in_flight=True)
    assert (queued.status, queued.success, queued.started, queued.worker) == ("queued", None, None, None)
    assert queued.func == "tests.app.tasks.mark_then_sleep" and queued.args == ("s1", 1.0, "slept")
    assert not Task.objects.filter(id=task_id).exists()  # nothing stored before it finished

    cluster(workers=1)
    wait_until(lambda: status(task_id) == "running")
    assert fetch(task_id) is None
    running = fetch(task_id, in_flight=True)
    assert running.cluster == q_cluster["name"] and running.worker and running.started is not None
    assert running.attempt_count == 1

    stored = fetch(task_id, wait=20_000)
    assert (stored.status, stored.success, stored.result) == ("success", True, "slept")
    assert stored.worker == running.worker and stored.cluster == q_cluster["name"]
    assert stored.enqueued <= stored.started <= stored.stopped


def test_without_use_tz_a_queued_task_has_naive_times_as_its_stored_row_will(q_cluster):
    """USE_TZ off: Django keeps naive TIME_ZONE times; fetch(in_flight=True) of a task still in the broker gives them too."""
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Berlin"):
        now = timezone.now()  # naive, in TIME_ZONE
        queued = fetch(async_task("tests.app.tasks.add", 1, 2, countdown=60), in_flight=True)
        assert queued.status == "queued" and queued.enqueued.tzinfo is None and queued.due.tzinfo is None
        assert abs((queued.enqueued - now).total_seconds()) < 30
        assert 30 < (queued.due - now).total_seconds() < 90


def test_cancel_a_queued_task_records_it_and_never_runs_it(cluster):
    task_id = async_task("tests.app.tasks.mark_then_sleep", "never", 0, hook="tests.app.tasks.record_hook",
                         countdown=60)
    assert cancel(task_id) is True
    task = fetch(task_id)
    assert (task.status, task.success, task.result) == ("cancelled", False, "cancelled before it started")
    assert Hooked.objects.get(task_id=task_id).success is False
    assert cancel(task_id) is False  # finished: nothing left to cancel
    cluster(workers=1)
    after = async_task("tests.app.tasks.add", 1, 1)
    assert result(after, wait=20_000) == 2
    assert not Hooked.objects.filter(task_id="never").exists()


def test_cancel_an_unknown_task_is_false(q_cluster):
    assert cancel("0" * 32) is False


def test_cancel_a_running_task_stops_it_and_the_worker_goes_on(cluster):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.catch_everything", "c1", 60)
    wait_until(lambda: Hooked.objects.filter(task_id="c1").exists())
    wait_until(lambda: status(task_id) == "running")
    assert cancel(task_id) is True
    task = fetch(task_id, wait=20_000)
    assert (task.status, task.success, task.result) == ("cancelled", False, "cancelled while running")
    assert result(async_task("tests.app.tasks.add", 2, 2), wait=20_000) == 4


def test_a_task_that_ignores_cancel_is_killed_after_the_grace_period(cluster):
    running = cluster(workers=1, cancel_grace=0.5)
    task_id = async_task("tests.app.tasks.stubborn", "c2", 60)
    wait_until(lambda: status(task_id) == "running")
    pid = running.view().workers[0].pid
    assert cancel(task_id) is True
    task = fetch(task_id, wait=20_000)
    assert task.status == "cancelled"
    assert "killed after the grace period" in task.result
    assert result(async_task("tests.app.tasks.pid"), wait=20_000) != pid  # a new worker


def test_cancel_a_task_held_by_the_pusher_before_it_starts(cluster):
    cluster(workers=1, queue_limit=10)
    blocker = async_task("tests.app.tasks.mark_then_sleep", "b", 2.0)
    wait_until(lambda: Hooked.objects.filter(task_id="b").exists())
    waiting = async_task("tests.app.tasks.mark_then_sleep", "w", 0)
    wait_until(lambda: queue_size() == 0)  # fetched into the pusher's buffer (leased)
    assert cancel(waiting) is True
    assert fetch(waiting, wait=20_000).status == "cancelled"
    assert fetch(blocker, wait=20_000).status == "success"
    assert not Hooked.objects.filter(task_id="w").exists()


def test_higher_priority_runs_first_and_equal_priorities_keep_their_order(cluster, key, redis_client):
    sent = [("a", 0), ("b", 5), ("c", -3), ("d", 5), ("e", 0), ("f", 100), ("g", -100)]
    ids = [async_task("tests.app.tasks.record_order", key, name, priority=p) for name, p in sent]
    cluster(workers=1, queue_limit=1)
    for task_id in ids:
        fetch(task_id, wait=20_000)
    assert [v.decode() for v in redis_client.lrange(key, 0, -1)] == ["f", "b", "d", "a", "e", "c", "g"]


def test_retry_with_backoff_until_it_succeeds(cluster, key):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.flaky", key, 2, retries=3, retry_delay=0.3, retry_backoff=2)
    task = fetch(task_id, wait=30_000)
    assert (task.status, task.result, task.attempt_count) == ("success", 3, 3)
    first, second = task.history
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["exception"] == second["exception"] == "builtins.ValueError"
    assert "run 1 of" in first["traceback"]
    # the second retry waited 0.3 * 2 s after the second failure
    assert second["started"] - first["stopped"] >= 0.3
    assert task.started.timestamp() - second["stopped"] >= 0.6


def test_retries_run_out_and_the_last_failure_is_stored(cluster, key):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.flaky", key, 10, retries=2)
    task = fetch(task_id, wait=30_000)
    assert (task.status, task.success, task.attempt_count, len(task.history)) == ("failure", False, 3, 2)
    assert task.exception == "builtins.ValueError" and "run 3 of" in task.result


def test_retry_on_other_exceptions_does_not_retry(cluster, key):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.flaky", key, 1, "KeyError", retries=3, retry_on=[ValueError])
    task = fetch(task_id, wait=30_000)
    assert (task.status, task.attempt_count, task.exception) == ("failure", 1, "builtins.KeyError")


def test_retry_on_matches_subclasses(cluster, key):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.flaky", key, 1, "ConnectionRefusedError", retries=1,
                         retry_on=["builtins.OSError"])
    assert fetch(task_id, wait=30_000).status == "success"


def test_a_deferred_task_waits_in_the_broker_until_due(cluster):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.add", 1, 2, countdown=1.5)
    queued = fetch(task_id, in_flight=True)
    assert queued.status == "queued" and queued.due is not None
    task = fetch(task_id, wait=20_000)
    assert task.result == 3
    assert (task.started - task.enqueued).total_seconds() >= 1.5


def test_run_after_a_datetime(cluster):
    from datetime import timedelta

    from django.utils import timezone

    cluster(workers=1)
    due = timezone.now() + timedelta(seconds=1)
    task = fetch(async_task("tests.app.tasks.add", 2, 2, run_after=due), wait=20_000)
    assert task.result == 4 and task.started >= due


def test_on_commit_enqueues_only_when_the_transaction_commits(cluster):
    cluster(workers=1)
    with transaction.atomic():
        task_id = async_task("tests.app.tasks.add", 3, 4, on_commit=True)
        assert fetch(task_id, in_flight=True) is None and queue_size() == 0
    assert result(task_id, wait=20_000) == 7


def test_on_commit_never_enqueues_after_a_rollback(cluster):
    cluster(workers=1)
    with pytest.raises(RuntimeError), transaction.atomic():
        task_id = async_task("tests.app.tasks.add", 3, 4, on_commit=True)
        raise RuntimeError("rolled back")
    marker = async_task("tests.app.tasks.add", 1, 1)
    assert result(marker, wait=20_000) == 2
    assert fetch(task_id, in_flight=True) is None


def test_async_many_enqueues_every_task_in_one_call(cluster):
    ids = async_many("tests.app.tasks.add", [(i, i) for i in range(50)], priority=1)
    assert len(set(ids)) == 50
    cluster(workers=2)
    assert [result(i, wait=20_000) for i in ids] == [i + i for i in range(50)]


def test_ack_failure_false_and_retries_together(cluster, key):
    """Without a retry policy ack_failure=False redelivers at once; with one, the policy's delay applies."""
    cluster(workers=1, max_attempts=3)
    started = time.time()
    task_id = async_task("tests.app.tasks.flaky", key, 5, retries=5, retry_delay=0.2)
    task = fetch(task_id, wait=30_000)
    # max_attempts caps the policy: three deliveries in all
    assert (task.status, task.attempt_count) == ("failure", 3)
    assert task.stopped.timestamp() - started >= 0.4
