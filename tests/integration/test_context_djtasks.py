"""current_task() and progress() in Django 6's @task functions, run by a real cluster on both brokers."""

from __future__ import annotations

import pytest

pytest.importorskip("django.tasks", reason="django.tasks exists from Django 6")

from django.tasks import TaskResultStatus  # noqa: E402

from django_q.conf import get_config  # noqa: E402
from django_q.tasks import fetch  # noqa: E402
from tests.app import dj_context_tasks  # noqa: E402

from .conftest import wait_until  # noqa: E402
from .test_context import progress_of  # noqa: E402


def finished(result, timeout: float = 30.0):
    def done():
        result.refresh()
        return result.is_finished

    wait_until(done, timeout)
    return result


def test_a_django_task_has_both_contexts_and_reports_progress(cluster, tmp_path):
    cluster(workers=1)
    go = tmp_path / "go"
    result = dj_context_tasks.report_then_wait.enqueue(str(go), 3, 10, "copying")
    assert wait_until(lambda: progress_of(result.id)) == {"done": 3, "total": 10, "note": "copying"}
    go.touch()
    finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    seen = result.return_value
    assert seen["id"] == seen["django_id"] == result.id
    assert seen["attempt"] == seen["django_attempt"] == 1
    assert seen["func"] == "tests.app.dj_context_tasks.report_then_wait"
    assert seen["cluster"] == get_config().name
    assert fetch(result.id, in_flight=True).progress is None


def test_an_async_django_task_sees_the_context(cluster, tmp_path):
    cluster(workers=1)
    go = tmp_path / "go"
    result = dj_context_tasks.async_report_then_wait.enqueue(str(go), 1, 2, "async")
    assert wait_until(lambda: progress_of(result.id)) == {"done": 1, "total": 2, "note": "async"}
    go.touch()
    finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    seen = result.return_value
    assert seen["id"] == seen["nested"] == seen["spawned"] == result.id
