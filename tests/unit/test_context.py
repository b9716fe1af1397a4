"""current_task() and progress() without a cluster: sync mode, the checks on progress, and how a report
travels (the worker's state file, the published status)."""

import asyncio
import os

import pytest

from django_q.brokers.memory import reset
from django_q.cluster.runstate import RunState
from django_q.context import NOTE_MAX, Progress, TaskContext, describe, report_progress_to, running
from django_q.package import TaskPackage
from django_q.runner import call, running_delivery
from django_q.status import ClusterStatus, Publisher, WorkerStatus
from django_q.tasks import async_task, current_task, result
from tests.app import context_tasks

from .helpers import UNREACHABLE_REDIS
from .pusher_rig import Rig

sync_db = pytest.mark.django_db(transaction=True)


def test_outside_a_task_there_is_no_current_task():
    assert current_task() is None
    assert context_tasks.context_now() is None


@sync_db
def test_sync_mode_gives_the_task_its_context(q_cluster, tmp_path):
    q_cluster(name="ctxsync", sync=True, redis=UNREACHABLE_REDIS)  # a broker would refuse the task
    go = tmp_path / "go"
    go.touch()
    task_id = async_task(context_tasks.report_then_wait, str(go), 3, 10, "copying", task_name="ctx-one",
                         group="ctx-group")
    seen = result(task_id)
    assert seen == {
        "id": task_id, "name": "ctx-one", "func": "tests.app.context_tasks.report_then_wait", "group": "ctx-group",
        "attempt": 1, "cluster": "ctxsync", "progress": {"done": 3, "total": 10, "note": "copying"},
    }
    assert current_task() is None  # and none once it returned


@sync_db
def test_sync_mode_coroutine_task_and_what_it_awaits_see_the_context(q_cluster, tmp_path):
    q_cluster(sync=True, redis=UNREACHABLE_REDIS)
    go = tmp_path / "go"
    go.touch()
    task_id = async_task(context_tasks.async_report_then_wait, str(go), 2, note="half")
    seen = result(task_id)
    assert seen["id"] == seen["nested"] == seen["spawned"] == task_id
    assert seen["progress"] == {"done": 2, "total": None, "note": "half"}


@sync_db
def test_bad_progress_arguments_raise_errors_naming_the_argument(q_cluster):
    q_cluster(sync=True, redis=UNREACHABLE_REDIS)
    seen = result(async_task(context_tasks.bad_progress))
    kinds = [(kind, message.split(" must ")[0]) for kind, message in seen["errors"]]
    assert kinds == [
        ("TypeError", "progress() done"), ("TypeError", "progress() done"), ("TypeError", "progress() done"),
        ("ValueError", "progress() done"), ("ValueError", "progress() done"), ("ValueError", "progress() done"),
        ("TypeError", "progress() total"),
        ("ValueError", "progress() total"), ("TypeError", "progress() note"),
    ]
    assert "not str" in seen["errors"][0][1] and "not -1" in seen["errors"][3][1]
    assert seen["note_length"] == NOTE_MAX


def test_a_context_reports_nothing_once_its_task_returned():
    context = TaskContext("a" * 32, "n", "f", None, 1, "q")
    with running(context):
        assert current_task() is context
        context.progress(1)
    assert current_task() is None
    with pytest.raises(RuntimeError, match="has finished"):
        context.progress(2)
    assert context.last_progress == Progress(1)


def test_each_report_goes_to_the_sink_a_worker_sets():
    reports = []
    report_progress_to(reports.append)
    try:
        with running(TaskContext("b" * 32, "n", "f", None, 1, "q")) as context:
            context.progress(1, 4)
            context.progress(2.5, 4, "more")
    finally:
        report_progress_to(None)
    assert reports == [Progress(1, 4), Progress(2.5, 4, "more")]


def test_a_task_run_in_sync_mode_inside_a_task_is_current_but_reports_to_no_sink():
    reports = []
    report_progress_to(reports.append)
    try:
        with running(TaskContext("e" * 32, "outer", "f", None, 1, "q")) as outer:
            with running(TaskContext("f" * 32, "inner", "f", None, 1, "q")) as inner:
                assert current_task() is inner
                inner.progress(1)
            assert current_task() is outer
            outer.progress(2)
    finally:
        report_progress_to(None)
    assert reports == [Progress(2)] and inner.last_progress == Progress(1)


@sync_db
def test_a_task_run_in_sync_mode_inside_a_task_leaves_the_outer_one_cancellable(q_cluster):
    q_cluster(sync=True, redis=UNREACHABLE_REDIS)
    task = TaskPackage(id="a" * 32, name="outer", func="tests.app.context_tasks.nested_sync_then_running")
    ran = call(task, 1, "outer-delivery", "q")
    assert ran.success, ran.value
    assert ran.value == {"delivery": "outer-delivery", "current": "a" * 32}
    assert running_delivery() is None


def test_the_state_file_carries_the_running_jobs_last_report(tmp_path):
    path = str(tmp_path / "state-1")
    writer, reader = RunState(path, writer=True), None
    try:
        reader = RunState(path, writer=False)
        writer.write(1, "delivery-1", 30.0)
        assert reader.read().progress is None  # nothing reported yet
        writer.write_progress(Progress(3, 10, "copying ✓"))
        seen = reader.read()
        assert seen.running == "delivery-1" and seen.progress == Progress(3, 10, "copying ✓")
        writer.write_progress(Progress(7.5, None, "é" * NOTE_MAX))
        assert reader.read().progress == Progress(7.5, None, "é" * NOTE_MAX)
        writer.write(2, "delivery-2", None)
        assert reader.read().progress is None  # the next job starts with no report
        writer.write_progress(Progress(1))
        writer.write(2)
        assert reader.read().progress is None  # between jobs
    finally:
        if reader is not None:
            reader.close()
        writer.remove()
    assert not os.path.exists(path)


def test_the_published_status_carries_each_workers_report():
    report = Progress(3, 10, "copying").as_dict()
    status = ClusterStatus(
        id="c" * 32, host="h", pid=1, name="q", state="running",
        workers=(WorkerStatus(0, 100, "t" * 32, "four", 1.5, report), WorkerStatus(1, 101)),
        queued=0, done=0, failed=0, started=1.0, updated=2.0,
    )
    back = ClusterStatus.from_json(status.to_json())
    assert back.workers[0].progress == report and back.workers[1].progress is None


def test_the_pusher_publishes_the_report_of_the_job_a_worker_runs(tmp_path):
    reset()
    try:
        rig = Rig(str(tmp_path))
        worker = rig.worker()
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.step()
        (job,) = worker.jobs()
        worker.start(job)
        worker.state.write_progress(Progress(3, 10, "copying"))
        rig.step()
        publisher = Publisher(rig.config, rig.pusher.identity, rig.pusher._status_snapshot, rig.pusher.tally)
        (status,) = publisher.build(rig.broker).workers
        assert (status.task_id, status.progress) == (task_id, {"done": 3, "total": 10, "note": "copying"})
        worker.finish(job)
        rig.step()
        (status,) = publisher.build(rig.broker).workers
        assert status.task_id is None and status.progress is None
    finally:
        reset()


def test_a_status_never_counts_as_finished_a_task_it_shows_running(tmp_path):
    """The outcome may arrive while the status is built: its worker shown running then, it is not counted yet."""
    reset()
    try:
        rig = Rig(str(tmp_path))
        worker = rig.worker()
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.step()
        (job,) = worker.jobs()
        worker.start(job)
        rig.step()

        def snapshot_then_finish():
            taken = rig.pusher._status_snapshot()
            worker.finish(job)  # the outcome comes in between the publisher's reads
            rig.step()
            return taken

        publisher = Publisher(rig.config, rig.pusher.identity, snapshot_then_finish, rig.pusher.tally)
        status = publisher.build(rig.broker)
        assert status.workers[0].task_id == task_id and status.counters.succeeded == 0
        assert publisher.build(rig.broker).counters.succeeded == 1
    finally:
        reset()


def test_describe_a_report():
    assert describe(None) == ""
    assert describe({"done": 3, "total": 10, "note": "copying"}) == "3/10 (30%) copying"
    assert describe({"done": 2.5, "total": None, "note": ""}) == "2.5"
    assert describe({"done": 1234567, "total": 2469134, "note": ""}) == "1234567/2469134 (50%)"


def test_a_coroutine_sees_the_context_it_was_started_in():
    async def inner():
        return current_task().id

    with running(TaskContext("d" * 32, "n", "f", None, 1, "q")):
        assert asyncio.run(inner()) == "d" * 32
