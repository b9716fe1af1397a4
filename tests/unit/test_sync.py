"""Sync mode runs a task in the calling process through pack, execute and save; results are read back.

These tests use transactional databases (`transaction=True`): run inside a
transaction, as in a plain `django_db` test or Django's TestCase, sync mode
closes the caller's connection (see the xfail test at the top).
"""

import time

import pytest

from django_q import signals
from django_q.exceptions import BrokerConnectionError
from django_q.models import Failure, Success, Task
from django_q.names import humanize, new_id
from django_q.package import TaskPackage
from django_q.tasks import (
    async_chain,
    async_iter,
    async_task,
    count_group,
    delete_group,
    fetch,
    fetch_group,
    result,
    result_group,
    schedule,
)
from tests.app.models import Hooked
from tests.app.tasks import Greeter, add, async_add, async_fail, bad_hook, echo_kwargs, fail, record_hook

from .helpers import UNREACHABLE_REDIS, received

sync_db = pytest.mark.django_db(transaction=True)


@pytest.mark.django_db
def test_sync_mode_inside_a_transaction_keeps_the_callers_connection():
    task_id = async_task("math.copysign", 2, -2, sync=True)
    assert result(task_id) == -2.0


@sync_db
class TestSyncTask:
    def test_the_result_is_stored(self):
        task_id = async_task("math.copysign", 2, -2, sync=True)
        assert result(task_id) == -2.0
        task = fetch(task_id)
        assert (task.func, task.args, task.kwargs, task.success) == ("math.copysign", (2, -2), {}, True)
        assert (task.name, task.attempt_count) == (humanize(task_id), 1)
        assert 0 <= task.time_taken() < 5

    def test_q_cluster_sync_runs_every_task_in_process(self, q_cluster):
        q_cluster(sync=True, redis=UNREACHABLE_REDIS)  # a broker would refuse the task
        assert result(async_task(add, 1, 2)) == 3

    def test_sync_false_per_call_wins_over_q_cluster_sync(self, q_cluster):
        q_cluster(sync=True, redis=UNREACHABLE_REDIS)
        with pytest.raises(BrokerConnectionError):
            async_task(add, 1, 2, sync=False)

    def test_the_cluster_name_is_recorded(self, q_cluster):
        q_cluster(name="reports")
        assert fetch(async_task(add, 1, 2, sync=True)).cluster == "reports"

    @pytest.mark.parametrize(("serializer", "compress"), [("json", False), ("json", True), ("pickle", True)])
    def test_every_package_encoding_runs(self, q_cluster, serializer, compress):
        q_cluster(serializer=serializer, compress=compress)
        assert result(async_task("math.copysign", 2, -2, sync=True)) == -2.0

    def test_a_failure_stores_the_traceback_ending_with_the_exception(self):
        task_id = async_task(fail, "kaput", sync=True)
        task = Failure.objects.get(id=task_id)
        assert task.success is False
        assert task.result.startswith("Traceback (most recent call last):")
        assert task.result.rstrip().splitlines()[-1] == "ValueError: kaput"
        assert result(task_id) == task.result

    def test_a_func_that_does_not_import_is_a_failure(self):
        task_id = async_task("tests.app.tasks.no_such_task", sync=True)
        assert "ImportError: cannot import 'tests.app.tasks.no_such_task'" in result(task_id)

    def test_a_coroutine_function_is_awaited(self):
        assert result(async_task(async_add, 1, 2, sync=True)) == 3

    def test_a_failing_coroutine_is_a_failure(self):
        task_id = async_task(async_fail, "late", sync=True)
        assert result(task_id).rstrip().endswith("ValueError: late")
        assert not fetch(task_id).success

    def test_a_result_that_cannot_be_pickled_is_a_failure(self):
        task_id = async_task("tests.app.tasks.unpicklable_result", sync=True)
        assert "the result of type lock cannot be pickled" in result(task_id)

    def test_a_bound_method_runs(self):
        task_id = async_task(Greeter("hi").greet, "bob", sync=True)
        assert result(task_id) == "hi bob"
        assert fetch(task_id).func == "tests.app.tasks.Greeter.greet"

    def test_save_false_stores_no_success(self):
        assert fetch(async_task(add, 1, 2, save=False, sync=True)) is None

    def test_save_false_still_stores_a_failure(self):
        assert fetch(async_task(fail, save=False, sync=True)).success is False

    def test_save_limit_minus_one_stores_no_success_unless_asked(self, q_cluster):
        q_cluster(save_limit=-1)
        assert fetch(async_task(add, 1, 2, sync=True)) is None
        assert result(async_task(add, 1, 2, save=True, sync=True)) == 3


@sync_db
class TestHooks:
    def test_the_hook_is_called_with_the_finished_task(self):
        task_id = async_task("math.modf", 2.5, hook=record_hook, sync=True)
        [hooked] = Hooked.objects.all()
        assert (hooked.task_id, hooked.result, hooked.success) == (task_id, "(0.5, 2.0)", True)

    def test_a_hook_given_as_a_dotted_path(self):
        task_id = async_task(fail, hook="tests.app.tasks.record_hook", sync=True)
        assert Hooked.objects.get(task_id=task_id).success is False

    def test_a_failing_hook_is_logged_and_the_result_kept(self, caplog):
        task_id = async_task(add, 1, 2, hook=bad_hook, sync=True)
        assert result(task_id) == 3
        [record] = [r for r in caplog.records if r.name == "django_q" and "hook" in r.getMessage()]
        assert task_id in record.getMessage()
        assert "this hook always fails" in record.exc_text

    def test_with_q_options_a_kwarg_named_hook_reaches_the_function(self):
        task_id = async_task(echo_kwargs, hook="just data", q_options={"sync": True})
        assert result(task_id) == {"hook": "just data"}
        assert not Hooked.objects.exists()

    def test_q_options_can_carry_the_hook(self):
        task_id = async_task(echo_kwargs, hook="just data", q_options={"sync": True, "hook": record_hook})
        assert result(task_id) == {"hook": "just data"}
        assert Hooked.objects.get().task_id == task_id


@sync_db
class TestSignals:
    def test_pre_execute_gets_the_function_and_the_package(self):
        with received(signals.pre_execute) as calls:
            task_id = async_task("math.copysign", 2, -2, sync=True)
        [call] = calls
        assert call["sender"] == "django_q"
        assert isinstance(call["task"].source, TaskPackage) and call["task"].id == task_id
        import math

        assert call["func"] is math.copysign

    def test_post_execute_gets_the_saved_task(self):
        with received(signals.post_execute) as calls:
            task_id = async_task(fail, sync=True)
        [call] = calls
        assert isinstance(call["task"].source, Task)
        assert (call["task"].id, call["task"].success) == (task_id, False)

    def test_post_execute_reaches_a_receiver_of_django_q_alone(self):
        calls = []

        def receiver(sender, task, **kwargs):
            calls.append(task.id)

        signals.post_execute.connect(receiver, sender="django_q", weak=False)
        try:
            task_id = async_task("math.copysign", 2, -2, sync=True)
        finally:
            signals.post_execute.disconnect(receiver, sender="django_q")
        assert calls == [task_id]

    def test_pre_enqueue_is_sent_in_sync_mode_too(self):
        with received(signals.pre_enqueue) as calls:
            async_task("math.copysign", 2, -2, sync=True)
        assert len(calls) == 1


@sync_db
class TestIter:
    def test_the_result_is_the_list_in_order(self):
        parent = async_iter("math.factorial", [1, 2, 3, 4, 5], sync=True)
        assert result(parent) == [1, 2, 6, 24, 120]

    def test_tuples_are_argument_lists(self):
        parent = async_iter(add, [(1, 2), (3, 4)], sync=True)
        assert result(parent) == [3, 7]
        assert fetch(parent).args == [(1, 2), (3, 4)]

    def test_only_the_parent_row_remains(self):
        parent = async_iter(add, [(1, 2), (3, 4), (5, 6)], group="it", sync=True)
        assert list(Task.objects.values_list("id", "group")) == [(parent, "it")]

    def test_a_failing_part_makes_a_failed_parent_with_its_traceback(self):
        parent = async_iter("math.sqrt", [4, -1, 9], sync=True)
        task = fetch(parent)
        assert task.success is False
        assert task.result[0] == 2.0 and task.result[2] == 3.0
        assert task.result[1].rstrip().endswith("ValueError: math domain error")

    def test_the_hook_is_called_once_with_the_list(self):
        parent = async_iter("math.factorial", [3, 4], hook=record_hook, sync=True)
        [hooked] = Hooked.objects.all()
        assert (hooked.task_id, hooked.result) == (parent, "[6, 24]")


@sync_db
class TestChain:
    def test_the_first_link_runs_in_its_group(self):
        group = async_chain([(add, (1, 2)), (add, (3, 4))], group="chain", sync=True)
        assert group == "chain"
        assert 3 in result_group("chain")

    def test_a_sync_chain_runs_every_link_in_order(self):
        group = async_chain([(add, (1, 2)), (add, (3, 4)), ("math.copysign", (5, -1))], sync=True)
        assert result_group(group, count=3) == [3, 7, -5.0]


@sync_db
class TestGroups:
    @pytest.fixture
    def group(self) -> str:
        async_task(add, 1, 1, group="g", sync=True)
        async_task(fail, "no", group="g", sync=True)
        async_task(add, 2, 2, group="g", sync=True)
        async_task(add, 9, 9, group="other", sync=True)
        return "g"

    def test_result_group_is_the_successes_in_start_order(self, group):
        assert result_group(group) == [2, 4]

    def test_result_group_with_failures(self, group):
        results = result_group(group, failures=True)
        assert (results[0], results[2]) == (2, 4)
        assert results[1].rstrip().endswith("ValueError: no")

    def test_count_waits_for_that_many_results(self, group):
        assert result_group(group, count=2) == [2, 4]
        assert result_group(group, count=3) is None
        assert len(result_group(group, failures=True, count=3)) == 3

    def test_an_unknown_group_is_none(self):
        assert result_group("nothing") is None
        assert fetch_group("nothing") is None

    def test_fetch_group_includes_failures_unless_told(self, group):
        assert [t.success for t in fetch_group(group)] == [True, False, True]
        assert [t.result for t in fetch_group(group, failures=False)] == [2, 4]

    def test_count_group(self, group):
        assert count_group(group) == 2
        assert count_group(group, failures=True) == 1

    def test_delete_group_keeps_the_tasks_without_the_label(self, group):
        assert delete_group(group) == 3
        assert count_group(group) == 0
        assert Task.objects.filter(group__isnull=True).count() == 3
        assert Task.objects.count() == 4

    def test_delete_group_with_tasks_deletes_them(self, group):
        assert delete_group(group, tasks=True) == 3
        assert list(Task.objects.values_list("group", flat=True)) == ["other"]


@sync_db
class TestReading:
    def test_result_of_an_unknown_task_waits_then_is_none(self):
        started = time.monotonic()
        assert result(new_id(), wait=200) is None
        assert 0.15 <= time.monotonic() - started < 5

    def test_result_without_wait_does_not_wait(self):
        """It looks once; waiting looks again and again. Counted in queries, not seconds: a busy
        machine makes one look slower than any bound that would tell it from a short wait."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as once:
            assert result(new_id()) is None
        with CaptureQueriesContext(connection) as waited:
            assert result(new_id(), wait=200) is None
        assert len(once) >= 1 and len(waited) >= 3 * len(once)

    def test_result_group_waits_then_is_none(self):
        started = time.monotonic()
        assert result_group("nothing", wait=200) is None
        assert 0.15 <= time.monotonic() - started < 5

    def test_fetch_by_task_name(self):
        task_id = async_task(add, 1, 2, task_name="nightly-report", sync=True)
        assert fetch("nightly-report").id == task_id
        assert result("nightly-report") == 3

    def test_fetch_by_the_generated_name(self):
        task_id = async_task(add, 1, 2, sync=True)
        assert fetch(humanize(task_id)).id == task_id

    def test_success_and_failure_proxies(self):
        ok = async_task(add, 1, 2, sync=True)
        bad = async_task(fail, sync=True)
        assert list(Success.objects.values_list("id", flat=True)) == [ok]
        assert list(Failure.objects.values_list("id", flat=True)) == [bad]

    def test_the_task_api_is_importable_from_the_package(self):
        import django_q

        assert django_q.async_task is async_task and django_q.result is result


@sync_db
class TestSchedule:
    def test_arguments_are_stored_as_text(self):
        sched = schedule("math.copysign", 2, -2, name="copy", x=1, y="a")
        assert (sched.args, sched.kwargs, sched.func) == ("2, -2", "x=1, y='a'", "math.copysign")

    def test_a_lambda_is_refused(self):
        from django_q.exceptions import TaskTypeError

        with pytest.raises(TaskTypeError):
            schedule(lambda: 1)

    def test_a_bad_cron_expression_is_a_validation_error(self):
        from django.core.exceptions import ValidationError

        with pytest.raises(ValidationError):
            schedule("math.copysign", 1, 2, schedule_type="C", cron="every tuesday")


@sync_db
def test_sync_mode_looks_a_task_up_each_time_so_that_a_mock_patch_holds(monkeypatch):
    assert result(async_task("tests.app.tasks.add", 2, 3, sync=True)) == 5
    monkeypatch.setattr("tests.app.tasks.add", lambda a, b: a * b)
    assert result(async_task("tests.app.tasks.add", 2, 3, sync=True)) == 6


@sync_db
class TestNoTask:
    def test_none_names_no_task(self):
        assert result(None) is None and result(None, wait=-1) is None
        assert fetch(None) is None
        from django_q.tasks import cancel

        assert cancel(None) is False

    @pytest.mark.parametrize("bad", [42, b"abc", ["x"]])
    def test_anything_else_but_a_str_is_refused_by_name(self, bad):
        from django_q.exceptions import TaskTypeError
        from django_q.tasks import cancel

        for call in (result, fetch, cancel):
            with pytest.raises(TaskTypeError, match="task_id must be a task id or name"):
                call(bad)


@sync_db
class TestGarbageIsNamed:
    """Wrong types raise a TaskTypeError (ours, and a TypeError) naming the argument, never a library's error."""

    @pytest.mark.parametrize("wait", ["500", None, True, [1]])
    def test_wait(self, wait):
        from django_q.exceptions import TaskTypeError

        for call in (result, fetch):
            with pytest.raises(TaskTypeError, match="wait must be a number of milliseconds"):
                call(new_id(), wait=wait)

    @pytest.mark.parametrize("cluster", [5, b"default", ["default"]])
    def test_cluster(self, cluster):
        from django_q.exceptions import TaskTypeError
        from django_q.tasks import cancel

        for call in (fetch, cancel):
            with pytest.raises(TaskTypeError, match="cluster must be a cluster name"):
                call(new_id(), cluster=cluster)

    @pytest.mark.parametrize("group", [None, 5, b"nightly"])
    def test_group(self, group):
        from django_q.exceptions import TaskTypeError
        from django_q.tasks import count_group, delete_group, fetch_group, result_group

        async_task(add, 1, 2, sync=True)  # a task without a group, which group=None would have matched
        for call in (result_group, fetch_group, count_group, delete_group):
            with pytest.raises(TaskTypeError, match="group must be a group name"):
                call(group)
        with pytest.raises(TaskTypeError):
            delete_group(group, tasks=True)
        assert Task.objects.count() == 1

    def test_errors_are_type_errors_of_our_tree(self):
        from django_q.exceptions import DjangoQError, TaskTypeError

        assert issubclass(TaskTypeError, TypeError) and issubclass(TaskTypeError, DjangoQError)


@sync_db
class TestNaiveRunAfter:
    def test_is_refused_with_use_tz(self):
        from datetime import datetime, timedelta

        from django_q.exceptions import TaskTypeError

        naive = datetime.now() + timedelta(hours=1)
        with pytest.raises(TaskTypeError, match="run_after .* is naive but USE_TZ is on"):
            async_task(add, 1, 2, run_after=naive)

    def test_is_read_in_time_zone_without_use_tz(self, settings):
        from datetime import timedelta

        from django.utils import timezone

        from django_q.enqueue import delay_of

        settings.USE_TZ, settings.TIME_ZONE = False, "Asia/Tokyo"
        naive = timezone.now() + timedelta(hours=1)  # naive, in Tokyo
        assert 3500 < delay_of({"run_after": naive}) <= 3600
