"""Every failure is visible: logged at ERROR with its task, handed to the error reporters, and sent as
the task_failed signal; a timeout names the task it killed. The pusher is stepped by hand
(tests/unit/pusher_rig.py); the recorder saves to the test database."""

import logging
import signal

import pytest

from django_q import signals
from django_q.brokers.memory import reset
from django_q.cluster.leases import CANCEL_POLL
from django_q.models import Task
from django_q.recorder import exception_line

from .helpers import received, reports
from .pusher_rig import Rig
from .test_recorder import failure, outcome, recorder

LOST = "django_q.exceptions.WorkerLost"


@pytest.fixture
def make_rig(tmp_path, plugin_installed):
    reset()
    path = tmp_path / "reports"
    yield lambda **options: Rig(str(tmp_path), error_reporter={"filelog": {"path": str(path)}}, **options), path
    reset()


class TestPusherFailures:
    def test_a_timeout_names_the_task_it_killed_and_is_reported(self, make_rig, caplog):
        make, path = make_rig
        rig = make()
        worker = rig.worker()
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0], timeout=5)
        rig.step()
        rig.clock.advance(5.1)
        with caplog.at_level(logging.ERROR, logger="django_q"):
            rig.step()
        assert rig.signals == [(worker.pid, signal.SIGKILL)]
        [killed] = [r for r in caplog.records if "killing its worker" in r.getMessage()]
        assert killed.levelno == logging.ERROR
        assert f"task t{task_id[-4:]} ({task_id}) math.floor passed its timeout" in killed.getMessage()
        worker.die()
        rig.step()
        (done,) = rig.to_saver()
        assert done.exception == LOST
        [report] = reports(path)
        assert report["type"] == "WorkerLost"
        assert task_id in report["message"] and "exceeded its timeout" in report["message"]

    def test_a_worker_lost_at_max_attempts_is_reported(self, make_rig):
        make, path = make_rig
        rig = make(max_attempts=1)
        worker = rig.worker()
        rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0])
        worker.die()
        rig.step()
        [report] = reports(path)
        assert report["type"] == "WorkerLost" and "worker lost after 1 attempts" in report["message"]

    def test_a_delivery_past_max_attempts_is_reported(self, make_rig):
        make, path = make_rig
        rig = make(max_attempts=1)
        rig.worker()
        rig.enqueue()
        rig.broker.requeue([d.id for d in rig.broker.dequeue(1, 0)])  # a delivery that never finished
        rig.fetch()
        rig.step()
        [report] = reports(path)
        assert report["type"] == "WorkerLost" and "(max_attempts=1)" in report["message"]

    def test_a_cancelled_task_is_not_reported(self, make_rig):
        make, path = make_rig
        rig = make()
        (task_id,) = rig.enqueue()
        rig.fetch()
        assert rig.broker.cancel(task_id).outcome == "requested"
        rig.leases(CANCEL_POLL)
        rig.step()
        (done,) = rig.to_saver()
        assert done.cancelled and reports(path) == []


@pytest.mark.django_db
class TestRecorded:
    def test_a_failure_is_logged_at_error_with_name_id_function_and_exception_line(self, caplog):
        failed = failure()
        with caplog.at_level(logging.ERROR, logger="django_q"):
            recorder().record([failed])
        [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
        task = failed.task
        assert record.getMessage() == (
            f"task {task.name} ({task.id}) tests.app.tasks.add failed on attempt 1: ValueError: boom"
        )

    def test_a_failure_the_task_did_not_raise_names_worker_lost(self, caplog):
        lost = outcome(success=False, result="task exceeded its timeout and its worker (pid 7) was killed")
        lost = lost._replace(exception=LOST)
        with caplog.at_level(logging.ERROR, logger="django_q"):
            recorder().record([lost])
        assert caplog.records[-1].getMessage().endswith(
            "failed on attempt 1: WorkerLost: task exceeded its timeout and its worker (pid 7) was killed"
        )

    def test_successes_and_cancelled_tasks_are_not_logged_as_failures(self, caplog):
        cancelled = outcome(success=False, result="cancelled before it started")._replace(cancelled=True)
        with caplog.at_level(logging.ERROR, logger="django_q"):
            recorder().record([outcome(), cancelled])
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []

    def test_task_failed_is_sent_with_the_saved_task(self):
        failed = failure()
        with received(signals.task_failed) as calls:
            recorder().record([failed, outcome()])
        [call] = calls
        task = call["task"]
        assert call["sender"] == "django_q" and isinstance(task, Task)
        assert (task.id, task.success, task._state.adding) == (failed.task.id, False, False)
        assert Task.objects.get(id=task.id).result == failed.result

    def test_a_cached_task_that_failed_is_logged_and_signalled_too(self, caplog):
        failed = failure(cached=True)  # its result goes to Django's cache, not to the database
        with caplog.at_level(logging.ERROR, logger="django_q"), received(signals.task_failed) as calls:
            recorder().record([failed])
        assert not Task.objects.filter(id=failed.task.id).exists()
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
            f"task {failed.task.name} ({failed.task.id}) tests.app.tasks.add failed on attempt 1: ValueError: boom"
        ]
        [call] = calls
        assert (call["task"].id, call["task"].success, call["task"]._state.adding) == (failed.task.id, False, True)

    def test_a_failing_task_failed_receiver_is_logged_and_the_batch_still_saved(self, caplog):
        def bad_receiver(sender, **kwargs):
            raise RuntimeError("receiver down")

        signals.task_failed.connect(bad_receiver, weak=False)
        try:
            failed = failure()
            saved = recorder().record([failed])
        finally:
            signals.task_failed.disconnect(bad_receiver)
        assert saved.ack_ids == (failed.delivery_id,)
        assert any("task_failed receiver failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("result", "exception", "line"),
    [
        ("Traceback (most recent call last):\n  ...\nZeroDivisionError: division by zero\n", "builtins.ZeroDivisionError",
         "ZeroDivisionError: division by zero"),
        ("worker lost after 2 attempts", LOST, "WorkerLost: worker lost after 2 attempts"),
        ("the result of type generator cannot be pickled: TypeError: x", None,
         "the result of type generator cannot be pickled: TypeError: x"),
    ],
)
def test_exception_line(result, exception, line):
    assert exception_line(outcome(success=False, result=result)._replace(exception=exception)) == line
