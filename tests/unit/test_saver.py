"""The saver thread of the pusher's process (cluster.saving) on the test's real database: a delivery is acked
only after its result row is committed, a database outage holds the acks back and loses nothing, and a stop
acks what was saved.

The pusher is a rig's (tests/unit/pusher_rig.py), stepped by hand with the in-memory broker; its saver is the
real one, run in its thread as in a cluster. The outage is a real one: the Task table renamed away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from django_q.brokers.memory import reset
from django_q.cluster.leases import BEAT
from django_q.cluster.saving import Saver
from django_q.models import Task

from .pusher_rig import LEASE, FakeWorker, Rig

pytestmark = pytest.mark.django_db(transaction=True)

PATIENCE = 30.0  # seconds any wait below gives up after


def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not check():
        assert time.monotonic() < deadline, f"not within {PATIENCE}s: {what}"
        time.sleep(0.01)


class SeenSaver(Saver):
    """The real saver, noting when it answers whether the rows it answers for are committed: counted from
    a connection of another thread, which sees only committed rows."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows_at_answer: list[int] = []

    def answer_after_looking(self, answer: Callable) -> Callable:
        def look_then_answer(saved) -> None:
            self.rows_at_answer.append(committed_rows())
            answer(saved)
        return look_then_answer


def committed_rows() -> int:
    counted: list[int] = []

    def count() -> None:
        try:
            counted.append(Task.objects.count())
        finally:
            connection.close()

    thread = threading.Thread(target=count)
    thread.start()
    thread.join(PATIENCE)
    return counted[0]


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    reset()
    rig = Rig(str(tmp_path))
    saving = rig.pusher.saving
    saver = SeenSaver(rig.config, saving.answer)
    saver.answer = saver.answer_after_looking(saving.answer)
    saving.saver = saver
    saver.start()
    yield rig
    saver.stop()
    saver.join(PATIENCE)
    reset()


def run_jobs(rig: Rig, worker: FakeWorker, count: int) -> list[str]:
    """Enqueue `count` tasks, have `worker` run them, and hand their outcomes over; their task ids."""
    task_ids = rig.enqueue(count)
    rig.fetch()
    rig.step()
    while len(worker.jobs()) < count:
        for job in worker.jobs()[worker.taken:]:
            worker.run(job)
        rig.step()
    for job in worker.jobs()[worker.taken:]:
        worker.run(job)
    rig.to_saver()
    return task_ids


def held(rig: Rig, task_ids: list[str]) -> list[str]:
    """Those of `task_ids` the broker still holds (not acked)."""
    return [i for i in task_ids if rig.broker.lookup(i) is not None]


def test_a_delivery_is_acked_only_after_its_result_row_is_committed(rig):
    worker = rig.worker()
    task_ids = run_jobs(rig, worker, 3)
    wait_for(lambda: rig.pusher.saving.answers, "the saver's answer")
    assert rig.pusher.saving.saver.rows_at_answer == [3]  # committed before the answer
    assert held(rig, task_ids) == task_ids
    rig.step()
    rig.leases()  # acks go through the lease thread
    assert held(rig, task_ids) == []
    assert not rig.pusher.saving.unsaved.messages


def test_a_database_outage_holds_the_acks_back_renews_the_leases_and_loses_nothing(rig):
    saver = rig.pusher.saving.saver
    worker = rig.worker()
    with connection.schema_editor() as editor:
        editor.alter_db_table(Task, Task._meta.db_table, "dq_task_away")
    try:
        task_ids = run_jobs(rig, worker, 3)
        wait_for(lambda: saver.outage.ongoing, "a failed save")
        for _ in range(int(2 * LEASE / BEAT)):  # two leases' time: the beats renew what waits to be saved
            rig.leases(BEAT)
            rig.step()
            assert rig.other_cluster_gets() == []
        assert held(rig, task_ids) == task_ids and not rig.pusher.saving.answers
    finally:
        with connection.schema_editor() as editor:
            editor.alter_db_table(Task, "dq_task_away", Task._meta.db_table)
    wait_for(lambda: rig.pusher.saving.answers, "the saver's answer once the table is back")
    rig.step()
    rig.leases()
    assert held(rig, task_ids) == []
    assert sorted(Task.objects.values_list("id", flat=True)) == sorted(task_ids)
    assert saver.rows_at_answer == [3]


def test_a_stop_acks_what_the_saver_saved_before_it_ended(rig):
    worker = rig.worker()
    task_ids = run_jobs(rig, worker, 2)  # handed over; the saver may not have saved them yet
    rig.pusher.stop()
    rig.pusher.close()  # ends the saver once it answered, then acks
    assert held(rig, task_ids) == []
    assert sorted(Task.objects.values_list("id", flat=True)) == sorted(task_ids)
