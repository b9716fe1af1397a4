"""The worker's in-process steps: call, execute, checked, run_package."""

import pickle
import threading
from multiprocessing import Pipe

import pytest

from django_q.cluster import worker as worker_module
from django_q.cluster.messages import STOP, Batch, Exit, Job, Outcome, unbatch
from django_q.cluster.runstate import RunState
from django_q.cluster.worker import Worker
from django_q.runner import call, checked, execute, run_package
from django_q.conf import Config
from django_q.exceptions import BadSignature, CorruptPackage
from django_q.package import HEADER_BYTES, SIG_BYTES, TaskPackage, pack, sign
from tests.app.tasks import Greeter

CONFIG = Config(name="workers", workers=1, queue_limit=1)


def make_task(func="tests.app.tasks.add", args=(1, 2), **fields) -> TaskPackage:
    return TaskPackage(id="ab" * 16, name="worker-test", func=func, args=args, **fields)


def ran(task: TaskPackage) -> tuple:
    """(success, value) of calling the task's function."""
    result = call(task)
    return result.success, result.value


class TestCall:
    def test_a_success_returns_true_and_the_value(self):
        assert ran(make_task()) == (True, 3)

    def test_an_exception_returns_false_and_the_traceback(self):
        success, text = ran(make_task("tests.app.tasks.fail", ("kaput",)))
        assert success is False
        assert text.startswith("Traceback (most recent call last):")
        assert "raise ValueError(message)" in text
        assert text.rstrip().splitlines()[-1] == "ValueError: kaput"

    def test_a_function_that_does_not_import_is_a_failure(self):
        success, text = ran(make_task("no_such_module.func"))
        assert success is False
        assert "ImportError: cannot import 'no_such_module.func'" in text

    def test_a_coroutine_is_awaited(self):
        assert ran(make_task("tests.app.tasks.async_add")) == (True, 3)

    def test_a_pickled_callable_is_called(self):
        assert ran(make_task(Greeter("hey"), ("you",))) == (True, "hey you")

    def test_kwargs_are_passed(self):
        assert ran(make_task("tests.app.tasks.echo_kwargs", (), kwargs={"a": 1})) == (True, {"a": 1})


class TestExecute:
    def test_an_outcome_with_timing_and_the_cluster_name(self):
        outcome = execute(make_task(), "delivery-1", 2, CONFIG)
        assert (outcome.delivery_id, outcome.success, outcome.result, outcome.attempts) == ("delivery-1", True, 3, 2)
        assert outcome.cluster == "workers"
        assert outcome.started <= outcome.stopped
        assert outcome.ack is True

    def test_the_tasks_own_cluster_is_recorded(self):
        assert execute(make_task(cluster="other"), "d", 1, CONFIG).cluster == "other"

    @pytest.mark.parametrize("ack_failures", [True, False])
    def test_a_failure_is_acked_when_ack_failures_is_on_and_released_when_off(self, ack_failures):
        config = Config(name="workers", ack_failures=ack_failures)
        outcome = execute(make_task("tests.app.tasks.fail"), "d", 1, config)
        assert (outcome.success, outcome.ack) == (False, ack_failures)

    def test_ack_failures_is_on_by_default(self):
        assert Config().ack_failures is True

    @pytest.mark.parametrize("ack_failure", [True, False])
    def test_the_tasks_ack_failure_wins_over_the_setting(self, ack_failure):
        config = Config(ack_failures=not ack_failure)
        task = make_task("tests.app.tasks.fail", ack_failure=ack_failure)
        assert execute(task, "d", 1, config).ack is ack_failure

    def test_a_success_is_acked_even_when_ack_failures_is_off(self):
        assert execute(make_task(), "d", 1, Config(ack_failures=False)).ack is True


class TestChecked:
    def outcome(self, value) -> Outcome:
        return Outcome("d", make_task(), True, value, 1.0, 2.0, 1, "c")

    def test_a_picklable_result_is_unchanged(self):
        outcome = self.outcome({"a": [1, 2]})
        assert checked(outcome) is outcome

    def test_an_unpicklable_result_becomes_a_failure(self):
        result = checked(self.outcome(threading.Lock()))
        assert result.success is False
        assert result.result.startswith("the result of type lock cannot be pickled: TypeError:")
        pickle.dumps(result)  # the failure itself crosses the process boundary

    def test_the_rest_of_the_outcome_is_kept(self):
        result = checked(self.outcome(threading.Lock()))
        assert (result.delivery_id, result.task, result.started, result.attempts) == ("d", make_task(), 1.0, 1)


class TestRunPackage:
    def test_a_package_is_unpacked_run_and_checked(self):
        outcome = run_package(pack(make_task()), "d", 1, CONFIG)
        assert (outcome.success, outcome.result) == (True, 3)

    def test_an_unpicklable_result_is_a_failure(self):
        outcome = run_package(pack(make_task("tests.app.tasks.unpicklable_result", ())), "d", 1, CONFIG)
        assert outcome.success is False
        assert "cannot be pickled" in outcome.result

    def test_a_tampered_package_is_not_run(self):
        data = bytearray(pack(make_task("tests.app.tasks.fail")))
        data[-1] ^= 0xFF
        with pytest.raises(BadSignature):
            run_package(bytes(data), "d", 1, CONFIG)

    def test_a_corrupt_package_raises(self):
        with pytest.raises(CorruptPackage):
            run_package(sign(b"junk", 0), "d", 1, CONFIG)

    def test_a_tampered_signature_raises(self):
        data = pack(make_task())
        tampered = data[: HEADER_BYTES - SIG_BYTES] + bytes(SIG_BYTES) + data[HEADER_BYTES:]
        with pytest.raises(BadSignature):
            run_package(tampered, "d", 1, CONFIG)


class TestRunState:
    """The state file a worker writes and the pusher and the sentinel read."""

    def test_a_reader_sees_what_the_writer_wrote(self, tmp_path):
        writer = RunState(str(tmp_path / "state-1"), writer=True)
        reader = RunState(str(tmp_path / "state-1"), writer=False)
        seen = reader.read()
        assert (seen.taken, seen.running, seen.timeout) == (0, None, None)
        writer.write(3, "1234567", 2.5)
        seen = reader.read()
        assert (seen.taken, seen.running, seen.timeout) == (3, "1234567", 2.5)
        assert seen.started > 0 and seen.started_mono > 0
        writer.write(4)
        seen = reader.read()
        assert (seen.taken, seen.running, seen.started) == (4, None, 0.0)
        writer.remove()
        assert reader.read() == seen  # the reader's mapping outlives the file
        assert not (tmp_path / "state-1").exists()

    def test_a_read_during_a_write_is_refused(self, tmp_path):
        from django_q.cluster.runstate import _SEQ

        writer = RunState(str(tmp_path / "state-2"), writer=True)
        reader = RunState(str(tmp_path / "state-2"), writer=False)
        writer.write(1, "9")
        _SEQ.pack_into(writer.map, 0, writer.seq + 1)  # odd: as if the writer were halfway through
        assert reader.read() is None
        writer.write(2, "10")
        assert reader.read().running == "10"


class TestOutbox:
    """How a worker's outcomes travel to the pusher: several to a message, none held behind a long task.

    A real Worker on one end of a socket pair; the test plays the pusher on the other end.
    """

    @pytest.fixture
    def pusher_end(self, tmp_path):
        ours, theirs = Pipe()
        state = RunState(str(tmp_path / "state"), writer=True)
        worker = Worker(theirs, 0, CONFIG, state)
        yield ours, worker
        worker.close()
        ours.close()
        theirs.close()
        state.remove()

    @staticmethod
    def job(n: int, func="tests.app.tasks.add", args=(1, 2)):
        return Job(f"delivery-{n}", 1, pack(TaskPackage(id=f"{n:032x}", name=f"t{n}", func=func, args=args)))

    @staticmethod
    def received(conn) -> list[list[str]]:
        """The delivery ids of each message the worker sent so far, a list per message."""
        got = []
        while conn.poll(0):
            got.append([m.delivery_id for m in unbatch(conn.recv())])
        return got

    def send_jobs(self, conn, *jobs):
        conn.send(Batch(tuple(jobs)))

    def test_short_outcomes_go_together_once_no_job_is_left(self, pusher_end, monkeypatch):
        conn, worker = pusher_end
        monkeypatch.setattr(worker_module, "FLUSH_AFTER", 60.0)  # age alone sends nothing here
        monkeypatch.setattr(worker_module, "BACKSTOP", 60.0)
        self.send_jobs(conn, *(self.job(n) for n in range(5)))
        conn.send(STOP)
        for _ in range(5):
            assert worker.loop() is None
        assert self.received(conn) == []  # five outcomes wait in the outbox
        assert worker.loop() is Exit.STOPPED  # no job left: they go before it waits for more
        assert self.received(conn) == [[f"delivery-{n}" for n in range(5)]]

    def test_outcomes_that_waited_flush_after_go_as_the_next_task_ends(self, pusher_end, monkeypatch):
        conn, worker = pusher_end
        monkeypatch.setattr(worker_module, "FLUSH_AFTER", 0.0)
        monkeypatch.setattr(worker_module, "BACKSTOP", 60.0)
        self.send_jobs(conn, *(self.job(n) for n in range(3)))
        for _ in range(3):
            assert worker.loop() is None
        assert self.received(conn) == [["delivery-0"], ["delivery-1"], ["delivery-2"]]

    def test_outcomes_go_before_a_job_of_a_function_that_ran_long(self, pusher_end, monkeypatch):
        conn, worker = pusher_end
        monkeypatch.setattr(worker_module, "FLUSH_AFTER", 0.05)
        monkeypatch.setattr(worker_module, "BACKSTOP", 60.0)
        sleep = "tests.app.tasks.sleep"
        self.send_jobs(conn, self.job(0, sleep, (0.06,)), self.job(1), self.job(2, sleep, (0.06,)), self.job(3))
        assert worker.loop() is None  # sleep ran 0.06 s: its function is slow from now on
        assert worker.loop() is None  # add: its outcome waits behind sleep's, which waited under 0.05 s
        assert self.received(conn) == []
        assert worker.loop() is None  # before the next sleep starts, both go
        assert self.received(conn) == [["delivery-0", "delivery-1"]]
        assert worker.loop() is None  # add: as before, its outcome waits with sleep's
        assert self.received(conn) == []

    def test_an_outcome_does_not_wait_out_a_task_that_runs_long_unexpectedly(self, pusher_end):
        conn, worker = pusher_end
        self.send_jobs(conn, self.job(0), self.job(1, "tests.app.tasks.sleep", (1.0,)))
        ran = threading.Thread(target=lambda: [worker.loop(), worker.loop()], daemon=True)
        ran.start()
        try:
            assert conn.poll(10.0)
            # Held to the end of the long task, it would have gone with that task's outcome.
            assert [m.delivery_id for m in unbatch(conn.recv())] == ["delivery-0"]
        finally:
            ran.join(10)
        assert not ran.is_alive()
        assert conn.poll(2.0)  # the long task's own outcome, sent by the backstop too
        assert self.received(conn) == [["delivery-1"]]
