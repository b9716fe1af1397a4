"""The worker's in-process steps: call, execute, checked, run_package."""

import pickle
import threading

import pytest

from django_q.cluster.messages import Outcome
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
        from django_q.cluster.runstate import RunState

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
        from django_q.cluster.runstate import _SEQ, RunState

        writer = RunState(str(tmp_path / "state-2"), writer=True)
        reader = RunState(str(tmp_path / "state-2"), writer=False)
        writer.write(1, "9")
        _SEQ.pack_into(writer.map, 0, writer.seq + 1)  # odd: as if the writer were halfway through
        assert reader.read() is None
        writer.write(2, "10")
        assert reader.read().running == "10"
