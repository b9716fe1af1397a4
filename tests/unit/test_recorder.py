"""Recorder.record: how outcomes become Task rows, and what runs after a new result."""

import itertools
import random
from datetime import datetime, timezone as dt_timezone

import pytest
from django.test import override_settings
from django.utils import timezone

from django_q.cluster.messages import DeadLetterNote, Outcome
from django_q.recorder import Recorder
from django_q.conf import Config
from django_q.models import DeadLetter, Failure, Success, Task
from django_q.names import humanize, new_id
from django_q.package import TaskPackage
from tests.app.models import Hooked

pytestmark = pytest.mark.django_db

_clock = itertools.count(1_700_000_000)


def make_task(**fields) -> TaskPackage:
    task_id = fields.pop("id", None) or new_id()
    fields.setdefault("name", humanize(task_id))
    return TaskPackage(id=task_id, func="tests.app.tasks.add", args=(1, 2), **fields)


def outcome(task=None, success=True, result=3, delivery="d", attempts=1, ack=True, **task_fields) -> Outcome:
    """An outcome that finished after every outcome made before it."""
    started = float(next(_clock))
    return Outcome(
        delivery_id=delivery,
        task=task or make_task(**task_fields),
        success=success,
        result=result,
        started=started,
        stopped=started + 0.5,
        attempts=attempts,
        cluster="c1",
        ack=ack,
    )


def failure(task=None, **kwargs) -> Outcome:
    return outcome(task, success=False, result="Traceback ...\nValueError: boom\n", **kwargs)


def recorder(**settings) -> Recorder:
    return Recorder(Config(**settings))


class TestStore:
    def test_a_new_outcome_is_inserted(self):
        done = outcome(group="g", hook=None, attempts=2)
        recorder().record([done])
        row = Task.objects.get(id=done.task.id)
        assert (row.name, row.func, row.args, row.kwargs, row.result) == (
            done.task.name,
            "tests.app.tasks.add",
            (1, 2),
            {},
            3,
        )
        assert (row.group, row.cluster, row.success, row.attempt_count) == ("g", "c1", True, 2)
        assert row.time_taken() == 0.5

    def test_times_are_stored_to_the_microsecond(self):
        done = outcome(enqueued=1_650_000_000.125)
        done = done._replace(started=done.started + 0.000123, stopped=done.started + 0.75)
        recorder().record([done])
        row = Task.objects.get(id=done.task.id)
        utc = dt_timezone.utc
        assert (row.enqueued, row.started, row.stopped) == (
            datetime.fromtimestamp(1_650_000_000.125, utc),
            datetime.fromtimestamp(done.started, utc),
            datetime.fromtimestamp(done.stopped, utc),
        )

    def test_without_use_tz_times_are_stored_naive_in_time_zone(self):
        done = outcome()
        with override_settings(USE_TZ=False, TIME_ZONE="Europe/Berlin"):
            recorder().record([done])
            row = Task.objects.get(id=done.task.id)
            expected = timezone.make_naive(datetime.fromtimestamp(done.started, dt_timezone.utc))
            assert row.started == expected and row.started.tzinfo is None
        assert row.success

    def test_a_success_is_not_overwritten_by_a_failure(self):
        task = make_task()
        recorder().record([outcome(task, result=3)])
        recorder().record([failure(task, attempts=2)])
        row = Task.objects.get(id=task.id)
        assert (row.success, row.result, row.attempt_count) == (True, 3, 1)

    def test_a_success_is_not_overwritten_by_a_second_success(self):
        task = make_task()
        recorder().record([outcome(task, result=3)])
        recorder().record([outcome(task, result=4, attempts=2)])
        assert Task.objects.get(id=task.id).result == 3

    def test_a_failure_is_replaced_by_a_success(self):
        task = make_task()
        recorder().record([failure(task)])
        recorder().record([outcome(task, result=3, attempts=2)])
        row = Task.objects.get(id=task.id)
        assert (row.success, row.result, row.attempt_count) == (True, 3, 2)
        assert Task.objects.count() == 1

    def test_the_last_of_one_task_in_a_batch_wins(self):
        task = make_task()
        recorder().record([failure(task), outcome(task, result=3, attempts=2)])
        assert Task.objects.get(id=task.id).success is True

    def test_a_clashing_task_name_is_made_unique(self):
        first, second = make_task(name="nightly"), make_task(name="nightly")
        recorder().record([outcome(first), outcome(second)])
        assert Task.objects.get(id=first.id).name == "nightly"
        assert Task.objects.get(id=second.id).name == f"nightly-{second.id[-6:]}"

    def test_saved_acks_the_acked_and_releases_the_rest(self):
        saved = recorder().record([outcome(delivery="a"), failure(delivery="b", ack=False), failure(delivery="c")])
        assert (saved.ack_ids, saved.release_ids) == (("a", "c"), ("b",))

    def test_dead_letters_are_kept_and_acked(self):
        note = DeadLetterNote(delivery_id="9", queue="q", payload=b"junk", reason="bad signature")
        saved = recorder().record([], dead=[note])
        letter = DeadLetter.objects.get()
        assert (letter.broker_id, letter.queue, bytes(letter.payload), letter.reason) == (
            "9",
            "q",
            b"junk",
            "bad signature",
        )
        assert saved.ack_ids == ("9",)


class TestDeadLetterBounds:
    def test_a_letter_over_package_limit_keeps_its_header_size_and_reason(self):
        from django_q.package import HEADER_BYTES, pack

        big = pack(TaskPackage(id=new_id(), name="big", func="tests.app.tasks.add", args=("x" * 5000,)))
        recorder(package_limit=1000).record([], dead=[DeadLetterNote("7", "q", big, "package is too large")])
        letter = DeadLetter.objects.get()
        assert bytes(letter.payload) == big[:HEADER_BYTES] and letter.size == len(big) > 5000
        assert letter.reason.startswith("package is too large; only the first")
        assert f"of {len(big)} bytes kept (over package_limit 1000)" in letter.reason

    def test_a_letter_within_package_limit_is_kept_whole(self):
        recorder(package_limit=1000).record([], dead=[DeadLetterNote("7", "q", b"j" * 1000, "bad signature")])
        letter = DeadLetter.objects.get()
        assert (bytes(letter.payload), letter.size, letter.reason) == (b"j" * 1000, 1000, "bad signature")

    def test_the_oldest_past_dead_letter_limit_are_dropped_and_logged(self, caplog):
        rec = recorder(dead_letter_limit=3)
        for batch in (["1", "2"], ["3", "4"], ["5"]):
            rec.record([], dead=[DeadLetterNote(n, "q", b"junk", "bad signature") for n in batch])
        assert sorted(DeadLetter.objects.values_list("broker_id", flat=True)) == ["3", "4", "5"]
        assert [r.getMessage() for r in caplog.records if "oldest dead letter" in r.getMessage()] == [
            "dropped the 1 oldest dead letter(s): more than dead_letter_limit 3 are kept",
            "dropped the 1 oldest dead letter(s): more than dead_letter_limit 3 are kept",
        ]

    def test_the_pusher_sends_only_the_header_of_an_oversized_package(self):
        from django_q.deadletters import note
        from django_q.package import HEADER_BYTES

        sent = note("7", "q", b"D" * 10_000, "package is 10000 bytes, over package_limit 100", 100)
        assert (len(sent.payload), sent.size) == (HEADER_BYTES, 10_000)
        assert note("8", "q", b"D" * 100, "bad signature", 100).payload == b"D" * 100


class TestSaveOptions:
    def test_save_false_stores_no_success(self):
        recorder().record([outcome(save=False)])
        assert not Task.objects.exists()

    def test_save_false_stores_a_failure(self):
        recorder().record([failure(save=False)])
        assert Failure.objects.count() == 1

    def test_save_limit_minus_one_keeps_no_success(self):
        recorder(save_limit=-1).record([outcome(), failure()])
        assert (Success.objects.count(), Failure.objects.count()) == (0, 1)

    def test_save_true_wins_over_save_limit_minus_one(self):
        recorder(save_limit=-1).record([outcome(save=True)])
        assert Success.objects.count() == 1

    def test_save_false_still_calls_the_hook(self):
        done = outcome(save=False, hook="tests.app.tasks.record_hook")
        recorder().record([done])
        assert Hooked.objects.get().task_id == done.task.id


class TestPruning:
    def test_save_limit_keeps_the_newest_successes(self):
        rec = recorder(save_limit=3)
        done = [outcome() for _ in range(5)]
        for one in done:
            rec.record([one])
        rec.prune_if_due(force=True)  # a burst of batches is pruned at most every PRUNE_EVERY
        assert set(Success.objects.values_list("id", flat=True)) == {o.task.id for o in done[2:]}

    def test_a_burst_of_batches_prunes_once_then_waits(self):
        rec = recorder(save_limit=1)
        rec.record([outcome()])
        rec.record([outcome()])
        assert Success.objects.count() == 2 and rec.prune_pending  # the second prune is put off
        rec.prune_if_due(force=True)
        assert Success.objects.count() == 1 and not rec.prune_pending

    def test_pruning_within_one_batch(self):
        done = [outcome() for _ in range(5)]
        recorder(save_limit=2).record(done)
        assert set(Success.objects.values_list("id", flat=True)) == {o.task.id for o in done[3:]}

    def test_successes_a_batch_would_prune_at_once_are_never_written_but_hooked(self):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        done = [outcome(hook="tests.app.tasks.record_hook") for _ in range(6)]
        with CaptureQueriesContext(connection) as queries:
            recorder(save_limit=2).record(done)
        assert set(Success.objects.values_list("id", flat=True)) == {o.task.id for o in done[4:]}
        assert sorted(Hooked.objects.values_list("task_id", flat=True)) == sorted(o.task.id for o in done)
        # written and pruned would have meant a DELETE of the four older ones; quote_name: MariaDB quotes with `
        table = connection.ops.quote_name(Task._meta.db_table)
        deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE") and table in q["sql"]]
        assert deletes == []

    def test_failures_are_never_pruned(self):
        rec = recorder(save_limit=1)
        failed = [failure() for _ in range(3)]
        rec.record(failed)
        rec.record([outcome(), outcome()])
        rec.prune_if_due(force=True)
        assert Failure.objects.count() == 3
        assert Success.objects.count() == 1

    def test_save_limit_zero_keeps_every_success(self):
        rec = recorder(save_limit=0)
        for _ in range(5):
            rec.record([outcome()])
        assert Success.objects.count() == 5


class TestHooks:
    def test_the_hook_gets_the_saved_task(self):
        done = outcome(hook="tests.app.tasks.record_hook", result=42)
        recorder().record([done])
        hooked = Hooked.objects.get()
        assert (hooked.task_id, hooked.result, hooked.success) == (done.task.id, "42", True)

    def test_the_hook_is_called_once_per_task_however_often_it_is_saved(self):
        task = make_task(hook="tests.app.tasks.record_hook")
        rec = recorder()
        rec.record([outcome(task, delivery="1")])
        rec.record([outcome(task, delivery="2")])  # delivered again: saved before
        rec.record([failure(task, delivery="3")])
        assert Hooked.objects.count() == 1

    def test_a_failure_then_a_success_calls_the_hook_for_each(self):
        task = make_task(hook="tests.app.tasks.record_hook")
        recorder().record([failure(task)])
        recorder().record([outcome(task)])
        assert list(Hooked.objects.order_by("id").values_list("success", flat=True)) == [False, True]

    def test_a_failing_hook_is_only_logged(self, caplog):
        done = outcome(hook="tests.app.tasks.bad_hook")
        saved = recorder().record([done])
        assert saved.ack_ids == ("d",)
        assert Task.objects.get(id=done.task.id).success is True
        [record] = [r for r in caplog.records if r.name == "django_q"]
        assert record.getMessage() == f"hook tests.app.tasks.bad_hook of task {done.task.name} ({done.task.id}) failed"

    def test_a_hook_that_does_not_import_is_only_logged(self, caplog):
        recorder().record([outcome(hook="tests.app.tasks.no_such_hook")])
        assert any("no_such_hook" in r.getMessage() for r in caplog.records if r.name == "django_q")
        assert Task.objects.count() == 1


class TestIterFolding:
    def parts(self, values, **fields):
        parent = new_id()
        return parent, [
            outcome(
                make_task(id=f"{parent[:24]}{i:08x}", name=f"it-{i}", parent=parent, iter_count=len(values), **fields),
                result=value,
            )
            for i, value in enumerate(values)
        ]

    def test_parts_are_folded_into_the_parent_once_all_ran(self):
        parent, parts = self.parts([10, 20, 30], group="g")
        shuffled = random.Random(7).sample(parts, len(parts))
        rec = recorder()
        for part in shuffled[:-1]:
            rec.record([part])
            assert not Task.objects.filter(id=parent).exists()
        rec.record([shuffled[-1]])
        row = Task.objects.get(id=parent)
        assert (row.result, row.success, row.group, row.name) == ([10, 20, 30], True, "g", "it")
        assert row.args == [(1, 2)] * 3
        assert Task.objects.count() == 1, "the parts are deleted once folded"

    def test_parts_in_one_batch(self):
        parent, parts = self.parts([1, 2, 3, 4])
        recorder().record(parts[::-1])
        assert Task.objects.get(id=parent).result == [1, 2, 3, 4]

    def test_a_failed_part_fails_the_parent(self):
        parent, parts = self.parts([1, 2])
        parts[1] = parts[1].with_result(False, "Traceback ...\nValueError: no\n")
        recorder().record(parts)
        row = Task.objects.get(id=parent)
        assert row.success is False and row.result[1].endswith("ValueError: no\n")

    def test_parts_are_kept_until_folded_even_with_save_limit_minus_one(self):
        parent, parts = self.parts([1, 2])
        rec = recorder(save_limit=-1)
        rec.record(parts[:1])
        assert Task.objects.filter(parent=parent).count() == 1
        rec.record(parts[1:])
        assert Task.objects.get(id=parent).result == [1, 2]

    def test_parts_are_not_pruned(self):
        parent, parts = self.parts([1, 2, 3])
        rec = recorder(save_limit=1)
        rec.record(parts[:2])
        rec.record([outcome(), outcome()])
        assert Task.objects.filter(parent=parent).count() == 2

    def test_the_hook_is_called_once_for_the_parent(self):
        parent, parts = self.parts([1, 2, 3], hook="tests.app.tasks.record_hook")
        rec = recorder()
        for part in parts:
            rec.record([part])
        hooked = Hooked.objects.get()
        assert (hooked.task_id, hooked.result) == (parent, "[1, 2, 3]")

    def test_a_part_delivered_again_after_the_fold_leaves_no_row(self):
        parent, parts = self.parts([1, 2])
        rec = recorder()
        rec.record(parts)
        rec.record([parts[0]])  # saved, but the cluster died before the ack
        assert list(Task.objects.values_list("id", flat=True)) == [parent]


class TestRawInsert:
    """Recorder._insert_many writes rows with one executemany instead of bulk_create: the rows must be the same."""

    def raw_rows(self) -> list[tuple]:
        from django.db import connection

        table = connection.ops.quote_name(Task._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {table} ORDER BY {connection.ops.quote_name('id')}")
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cursor.fetchall()]

    @pytest.mark.parametrize("use_tz", [True, False])
    def test_the_rows_are_those_bulk_create_writes(self, use_tz):
        with override_settings(USE_TZ=use_tz, TIME_ZONE="Europe/Paris"):
            outcomes = [
                outcome(group="g", attempts=3, enqueued=1_650_000_000.123456, priority=-5),
                failure(hook="tests.app.tasks.record_hook", history=({"attempt": 1, "worker": "h:1"},)),
                outcome(result={"ü": [1, 2.5, None]}, kwargs={"x": "ÿ"}, parent=new_id(), iter_count=2),
                outcome(result=None, enqueued=0.0).with_result(False, "cancelled")._replace(cancelled=True),
            ]
            rec = recorder()
            rec._insert_many(outcomes)
            ours = self.raw_rows()
            Task.objects.all().delete()
            Task.objects.bulk_create([rec._row(o) for o in outcomes])
            theirs = self.raw_rows()
        assert len(ours) == len(outcomes)
        assert ours == theirs
