"""current_task() and progress() in a real cluster, on both brokers: what a running task knows of itself,
and its progress seen by fetch(id, in_flight=True), the admin's in-flight page and qmonitor."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from django_q.conf import get_config
from django_q.tasks import async_task, current_task, fetch, result
from tests.app import context_tasks

from .conftest import wait_until

COPYING = {"done": 3, "total": 10, "note": "copying"}


def progress_of(task_id: str):
    """The in-flight task's progress once it shows, else None."""
    task = fetch(task_id, in_flight=True)
    return task.progress if task is not None and task.status == task.RUNNING else None


def test_progress_shows_while_the_task_runs_then_the_task_knows_itself(cluster, tmp_path):
    cluster()
    go = tmp_path / "go"
    task_id = async_task(context_tasks.report_then_wait, str(go), 3, 10, "copying", task_name="ctx-cluster",
                         group="ctx-g")
    assert wait_until(lambda: progress_of(task_id)) == COPYING
    running = fetch(task_id, in_flight=True)
    assert running.status == running.RUNNING and running.success is None
    assert current_task() is None  # the test process runs no task
    go.touch()
    assert result(task_id, wait=30_000) == {
        "id": task_id, "name": "ctx-cluster", "func": "tests.app.context_tasks.report_then_wait",
        "group": "ctx-g", "attempt": 1, "cluster": get_config().name, "progress": COPYING,
    }
    assert fetch(task_id, in_flight=True).progress is None  # a stored task keeps no progress


def test_a_task_that_never_reported_shows_no_progress(cluster, tmp_path):
    cluster()
    go = tmp_path / "go"
    task_id = async_task("tests.app.tasks.wait_for_file", str(go))

    def running():
        task = fetch(task_id, in_flight=True)
        return task if task is not None and task.status == task.RUNNING else None

    assert wait_until(running).progress is None
    go.touch()
    assert result(task_id, wait=30_000) is True


def test_attempt_counts_a_redelivery(cluster):
    cluster()
    task_id = async_task(context_tasks.die_on_first_attempt)
    seen = result(task_id, wait=60_000)
    assert seen is not None, fetch(task_id, in_flight=True)
    assert seen["id"] == task_id and seen["attempt"] == 2


def test_a_coroutine_task_reports_progress(cluster, tmp_path):
    cluster()
    go = tmp_path / "go"
    task_id = async_task(context_tasks.async_report_then_wait, str(go), 5, 8, "async")
    assert wait_until(lambda: progress_of(task_id)) == {"done": 5, "total": 8, "note": "async"}
    go.touch()
    seen = result(task_id, wait=30_000)
    assert seen["id"] == seen["nested"] == seen["spawned"] == task_id
    assert seen["attempt"] == 1


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("ctx-admin", "ctx@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_in_flight_page_and_qmonitor_show_progress(cluster, tmp_path, staff_client):
    cluster()
    go = tmp_path / "go"
    task_id = async_task(context_tasks.report_then_wait, str(go), 3, 10, "copying")
    try:
        wait_until(lambda: progress_of(task_id))
        page = staff_client.get("/admin/django_q/inflight/").content.decode()
        row = next(line.split("</tr>")[0] for line in page.split("<tr") if task_id in line)
        assert '<td class="progress">3/10 (30%) copying</td>' in row
        out = io.StringIO()
        call_command("qmonitor", "--run-once", stdout=out)
        lines = out.getvalue().splitlines()
        header = next(line for line in lines if "Running for" in line)
        assert "Progress" in header
        worker_row = next(line for line in lines if task_id in line)
        assert "3/10 (30%) copying" in worker_row
    finally:
        go.touch()
    assert result(task_id, wait=30_000)["progress"] == COPYING
