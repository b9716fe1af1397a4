"""Django 6's django.tasks run by a real cluster through DjangoQBackend, on both brokers."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytest.importorskip("django.tasks", reason="django.tasks exists from Django 6")

from asgiref.sync import async_to_sync  # noqa: E402
from django.db import transaction  # noqa: E402
from django.tasks import TaskResultStatus, default_task_backend  # noqa: E402
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist  # noqa: E402
from django.tasks.signals import task_enqueued  # noqa: E402
from django.utils import timezone  # noqa: E402

from django_q.conf import get_config  # noqa: E402
from django_q.tasks import cancel, queue_size  # noqa: E402
from tests.app import dj_tasks  # noqa: E402
from tests.app.models import Hooked  # noqa: E402

from .conftest import wait_until  # noqa: E402


def finished(result, timeout: float = 30.0):
    """Refresh `result` until the task finished; return it."""

    def done():
        result.refresh()
        return result.is_finished

    wait_until(done, timeout)
    return result


@pytest.fixture
def key(queue_name, redis_client):
    yield f"{queue_name}:dj"
    redis_client.delete(f"{queue_name}:dj")


def test_a_sync_task_runs_and_its_result_is_read_back(cluster):
    cluster(workers=1)
    result = dj_tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY and result.backend == "default"
    finished(result)
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 5)
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert len(result.worker_ids) == 1 and result.attempts == 1 and result.errors == []
    again = dj_tasks.add.get_result(result.id)
    assert (again.id, again.return_value, again.task.func) == (result.id, 5, dj_tasks.add.func)


def test_an_async_task_is_awaited(cluster):
    cluster(workers=1)
    assert finished(dj_tasks.async_add.enqueue(4, 5)).return_value == 9


def test_aenqueue_and_aget_result(cluster):
    cluster(workers=1)
    result = async_to_sync(dj_tasks.add.aenqueue)(1, 1)
    finished(result)
    assert async_to_sync(dj_tasks.add.aget_result)(result.id).return_value == 2


def test_a_task_that_takes_context_gets_its_result_and_attempt(cluster):
    cluster(workers=1)
    result = finished(dj_tasks.with_context.enqueue("v"))
    assert result.return_value == {"value": "v", "id": result.id, "attempt": 1}


def test_a_failure_carries_the_exception_class_and_traceback(cluster):
    cluster(workers=1)
    result = finished(dj_tasks.fail.enqueue("kaput"))
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert error.exception_class_path == "builtins.ValueError" and error.exception_class is ValueError
    assert "ValueError: kaput" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value


def test_arguments_and_results_follow_djangos_json_rule(cluster):
    cluster(workers=1)
    result = finished(dj_tasks.echo.enqueue((1, 2), {"k": (3,)}, flag=True))
    assert result.args == [[1, 2], {"k": [3]}]
    assert result.return_value == {"args": [[1, 2], {"k": [3]}], "kwargs": {"flag": True}}
    with pytest.raises(TypeError):
        dj_tasks.echo.enqueue(object())
    bad = finished(dj_tasks.not_json.enqueue())
    assert bad.status == TaskResultStatus.FAILED and bad.errors[0].exception_class_path == "builtins.TypeError"


def test_an_unknown_id_does_not_exist(cluster):
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("0" * 32)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-an-id")


def test_status_is_ready_then_running_then_successful(cluster):
    result = dj_tasks.sleep.enqueue("dj-s", 1.0)
    result.refresh()
    assert result.status == TaskResultStatus.READY  # no cluster yet: in the broker
    cluster(workers=1)

    def running():
        result.refresh()
        return result.status == TaskResultStatus.RUNNING

    wait_until(running)
    assert result.started_at is not None and len(result.worker_ids) == 1
    assert finished(result).return_value == "slept"


def test_run_after_defers_in_the_broker(cluster):
    cluster(workers=1)
    due = timezone.now() + timedelta(seconds=1)
    result = dj_tasks.add.using(run_after=due).enqueue(1, 2)
    result.refresh()
    assert result.status == TaskResultStatus.READY and result.task.run_after is not None
    finished(result)
    assert result.started_at >= due and result.return_value == 3


def test_priority_orders_the_queue(cluster, key, redis_client):
    results = [
        dj_tasks.record_order.using(priority=p).enqueue(key, name)
        for name, p in [("low", -50), ("mid", 0), ("top", 90), ("mid2", 0)]
    ]
    cluster(workers=1, queue_limit=1)
    for result in results:
        finished(result)
    assert [v.decode() for v in redis_client.lrange(key, 0, -1)] == ["top", "mid", "mid2", "low"]
    assert dj_tasks.record_order.get_result(results[2].id).task.priority == 90


def test_priority_outside_the_range_is_invalid(q_cluster):
    with pytest.raises(InvalidTask):
        dj_tasks.add.using(priority=101)


def test_queues_map_to_clusters(q_cluster):
    backend = default_task_backend
    assert backend.cluster_of("default") == get_config().name
    assert backend.cluster_of("other") == "other"
    assert backend.cluster_of("mapped").startswith("mapped")
    result = dj_tasks.add.using(queue_name="mapped").enqueue(1, 1)
    try:
        assert queue_size(cluster=backend.cluster_of("mapped")) == 1
        assert queue_size() == 0
        assert default_task_backend.get_result(result.id).task.queue_name == "mapped"
    finally:
        from django_q.brokers import get_broker

        get_broker(backend.cluster_of("mapped")).purge()
    with pytest.raises(InvalidTask):
        dj_tasks.add.using(queue_name="nowhere").enqueue(1, 1)


def test_signals_enqueued_here_started_and_finished_in_the_worker(cluster):
    got = []

    def enqueued(sender, task_result, **kwargs):
        got.append((sender.__name__, task_result.id))

    task_enqueued.connect(enqueued)
    try:
        cluster(workers=1)
        result = finished(dj_tasks.add.enqueue(1, 2))
    finally:
        task_enqueued.disconnect(enqueued)
    assert got == [("DjangoQBackend", result.id)]
    wait_until(lambda: Hooked.objects.filter(task_id=result.id).count() == 2)
    assert sorted(Hooked.objects.filter(task_id=result.id).values_list("result", flat=True)) == [
        "finished SUCCESSFUL", "started DjangoQBackend"
    ]


def test_retry_policy_of_the_task_retries_and_keeps_every_error(cluster, key):
    cluster(workers=1)
    result = finished(dj_tasks.flaky.enqueue(key, 2))
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 3)
    assert [e.exception_class_path for e in result.errors] == ["builtins.ValueError"] * 2
    assert result.attempts == 3


def test_enqueue_on_commit_option(cluster, settings):
    settings.TASKS = {
        "default": {**settings.TASKS["default"], "OPTIONS": {"ENQUEUE_ON_COMMIT": True}},
    }
    cluster(workers=1)
    with transaction.atomic():
        result = dj_tasks.add.enqueue(5, 5)
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result.id)
    assert finished(result).return_value == 10


def test_cancel_makes_a_task_failed(cluster):
    result = dj_tasks.add.using(run_after=timezone.now() + timedelta(minutes=5)).enqueue(1, 1)
    assert cancel(result.id) is True
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class_path == "django_q.exceptions.TaskCancelled"


def test_one_cluster_serving_every_queue_of_the_backend_runs_them_in_order(cluster, queue_name, key, redis_client):
    from django.tasks import task_backends
    from django.test import override_settings

    from django_q.brokers import get_broker

    urgent, bulk = f"{queue_name}-urgent", f"{queue_name}-bulk"
    backend_setting = {"BACKEND": "django_q.tasks_backend.DjangoQBackend", "QUEUES": [urgent, "default", bulk]}
    with override_settings(TASKS={"default": backend_setting}):
        backend = task_backends["default"]
        served = tuple(backend.cluster_of(q) for q in backend_setting["QUEUES"])  # backend.queues is a set
        assert served == (urgent, get_config().name, bulk)
        try:
            results = [dj_tasks.record_order.using(queue_name=q).enqueue(key, q) for q in (bulk, "default", urgent)]
            cluster(workers=1, queue_limit=1, queues=served)
            for result in results:
                assert finished(result).status == TaskResultStatus.SUCCESSFUL
            assert [v.decode() for v in redis_client.lrange(key, 0, -1)] == [urgent, "default", bulk]
            assert backend.get_result(results[0].id).task.queue_name == bulk
        finally:
            for name in served:
                get_broker(name).purge()
