"""The pusher's decisions, stepped by hand (tests/unit/pusher_rig.py): no process is forked and nothing sleeps.

A `Rig` builds a Pusher that was
never started (no socket, no thread), connects fake workers and a saver
that keeps what it is handed, fills the buffer with `fetch()` and calls `Pusher.step()` with the
connections that have something to read, as `Pusher.wait()` would. The lease
thread's decisions are `Leases.step(broker, now)`, called the same way.
Workers' state files are real files in the test's folder, written with the
rig's clock.
"""

from __future__ import annotations

import signal
import threading

import pytest

from django_q.brokers.base import LEASED
from django_q.brokers.memory import MemoryBroker, reset
from django_q.cluster.channels import cancel_path, decode_cancels
from django_q.cluster.leases import CANCEL_POLL
from django_q.cluster.messages import STOP, Batch, Outcome
from django_q.cluster.pusher import KEEPERS_DELAY, SCHEDULER_DELAY, Pusher
from django_q.cluster.unsaved import WINDOW
from django_q.conf import Config
from django_q.outcomes import DeadLetterNote
from django_q.package import TaskPackage, pack, sign

from .pusher_rig import LEASE, QUEUE, SHORT, NotedPublisher, Rig, task_of


@pytest.fixture
def rig(tmp_path):
    reset()
    yield Rig(str(tmp_path))
    reset()


@pytest.fixture
def make_rig(tmp_path):
    reset()
    yield lambda **options: Rig(str(tmp_path), **options)
    reset()


def test_a_new_pusher_starts_nothing(tmp_path):
    threads = threading.active_count()
    pusher = Pusher(Config(name=QUEUE), str(tmp_path / "pusher.sock"), broker=MemoryBroker(QUEUE, LEASE))
    assert threading.active_count() == threads
    assert not (tmp_path / "pusher.sock").exists()
    assert pusher.listener is None and pusher.status is None and pusher.leases.thread is None
    assert not pusher.fetcher.is_alive()


class TestAdmit:
    def test_a_package_whose_signature_fails_is_dead_lettered_not_run(self, rig):
        worker = rig.worker()
        rig.broker.enqueue(sign(b"junk", 0)[:-1] + b"!")
        rig.fetch()
        rig.step()
        assert worker.jobs() == []
        (note,) = rig.to_saver()
        assert isinstance(note, DeadLetterNote) and "signature" in note.reason

    def test_a_delivery_past_max_attempts_is_recorded_as_failed(self, make_rig):
        rig = make_rig(max_attempts=2)
        worker = rig.worker()
        rig.enqueue()
        for _ in range(2):  # two deliveries that never finished
            rig.broker.requeue([d.id for d in rig.broker.dequeue(1, 0)])
        rig.fetch()
        rig.step()
        assert worker.jobs() == []
        (outcome,) = rig.to_saver()
        assert outcome.success is False and outcome.attempts == 3
        assert "delivered 3 times without finishing (max_attempts=2)" in outcome.result


class TestDispatch:
    def test_one_job_per_idle_worker_while_run_times_are_unknown(self, rig):
        workers = [rig.worker(), rig.worker()]
        rig.enqueue(5)
        rig.fetch()
        rig.step()
        assert [len(w.jobs()) for w in workers] == [1, 1]
        assert len(rig.pusher.fetcher.buffer) == 3
        assert rig.pusher.fetcher.prefetch == 0

    def test_what_the_fetcher_brings_goes_to_an_idle_worker_from_its_thread_unless_the_loop_is_busy(self, rig):
        workers = [rig.worker(), rig.worker()]
        rig.step()  # both connected, idle
        rig.pusher.fetcher.deal = rig.pusher._deal_now  # as start() wires it
        woken = []
        rig.pusher._wake = woken.append
        rig.pusher.fetcher.wake = rig.pusher._wake
        rig.enqueue(3)
        with rig.pusher.lock:  # the loop is making a pass: it is woken and deals them itself
            rig.fetch()
        assert [len(w.jobs()) for w in workers] == [0, 0] and len(woken) == 1
        rig.pusher.fetcher.buffer.clear()
        rig.enqueue(2)
        rig.fetch()  # the loop waits: dealt at once, without waking it
        assert [len(w.jobs()) for w in workers] == [1, 1] and len(woken) == 1

    def test_short_tasks_go_several_to_a_message_and_are_topped_up_at_half(self, rig):
        worker = rig.worker()
        rig.warm(worker, 60)  # run times known: 10 jobs a worker
        assert len(worker.conn.sent) == 2 and type(worker.conn.sent[1]) is Batch
        assert len(worker.conn.sent[1].messages) == 10
        assert rig.pusher.fetcher.prefetch == 2 * 10
        for job in worker.jobs()[1:5]:  # 6 left in hand: more than half of 10
            worker.run(job, took=SHORT)
        rig.step()
        assert len(worker.conn.sent) == 2
        worker.run(worker.jobs()[5], took=SHORT)  # 5 left: topped up to 10
        rig.step()
        assert len(worker.conn.sent) == 3 and len(worker.conn.sent[2].messages) == 5

    def test_deep_workers_are_filled_evenly_one_job_each_first(self, rig):
        workers = [rig.worker(), rig.worker()]
        rig.enqueue(2)
        rig.fetch()
        rig.step()
        for worker in workers:
            worker.run(worker.jobs()[0], took=SHORT)
        rig.enqueue(3)
        rig.fetch()
        rig.step()
        assert [len(w.jobs()) - 1 for w in workers] == [2, 1]

    def test_a_replacement_gets_no_job_until_the_worker_it_replaces_is_gone(self, rig):
        old = rig.worker(index=0)
        *_, third = rig.enqueue(3)
        rig.fetch()
        rig.step()
        spare = rig.worker(index=0)
        old.run(old.jobs()[0])
        rig.step()
        assert len(spare.jobs()) == 0 and len(old.jobs()) == 2
        old.run(old.jobs()[1])
        old.die()
        rig.step()  # its last outcome: it may be sent the third job before its EOF is read
        rig.step()  # its EOF: a job it never took goes back to the buffer
        assert [task_of(j).id for j in spare.jobs()] == [third] and not rig.pusher.fetcher.buffer


class TestTimeouts:
    def test_a_worker_past_its_tasks_timeout_is_killed_and_the_task_recorded_as_failed(self, rig):
        worker = rig.worker()
        rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0], timeout=5)
        rig.step()
        rig.clock.advance(4.9)
        rig.step()
        assert rig.signals == []
        rig.clock.advance(0.2)
        rig.step()
        assert rig.signals == [(worker.pid, signal.SIGKILL)]
        worker.die()
        rig.step()
        (outcome,) = rig.to_saver()
        assert outcome.success is False and "exceeded its timeout" in outcome.result
        assert outcome.worker.endswith(f":{worker.pid}")


class TestCancel:
    def cancel_request(self, rig: Rig, task_id: str) -> None:
        assert rig.broker.cancel(task_id).outcome == "requested"  # leased: the cluster holding it is asked
        rig.leases(CANCEL_POLL)

    def test_a_buffered_job_is_dropped_and_recorded_as_cancelled(self, rig):
        (task_id,) = rig.enqueue()
        rig.fetch()
        self.cancel_request(rig, task_id)
        rig.step()
        assert not rig.pusher.fetcher.buffer
        (outcome,) = rig.to_saver()
        assert outcome.cancelled and outcome.result == "cancelled before it started"

    def test_a_running_job_is_signalled_then_killed_after_the_grace_period(self, make_rig, tmp_path):
        rig = make_rig(cancel_grace=3)
        worker = rig.worker()
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.step()
        job = worker.jobs()[0]
        worker.start(job)
        rig.step()
        self.cancel_request(rig, task_id)
        rig.step()
        assert rig.signals == [(worker.pid, signal.SIGUSR1)]
        with open(cancel_path(rig.folder, worker.pid)) as f:
            assert decode_cancels(f.read()) == {job.delivery_id}
        rig.clock.advance(2.9)
        rig.step()
        assert rig.signals == [(worker.pid, signal.SIGUSR1)]
        rig.clock.advance(0.2)
        rig.step()
        assert rig.signals[-1] == (worker.pid, signal.SIGKILL)
        worker.die()
        rig.step()
        (outcome,) = rig.to_saver()
        assert outcome.cancelled and "killed after the grace period" in outcome.result

    def test_a_job_waiting_in_a_worker_is_named_in_its_cancel_file(self, rig):
        worker = rig.worker()
        rig.warm(worker)
        waiting = worker.jobs()[3]
        self.cancel_request(rig, task_of(waiting).id)
        rig.step()
        assert rig.signals == [(worker.pid, signal.SIGUSR1)]
        with open(cancel_path(rig.folder, worker.pid)) as f:
            assert decode_cancels(f.read()) == {waiting.delivery_id}


class TestLeases:
    def test_held_leases_are_renewed_every_third_of_retry(self, rig):
        worker = rig.worker()
        rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0])
        for _ in range(4):  # 44 s, well past the 30 s lease
            rig.leases(LEASE / 3 + 1)
            assert rig.other_cluster_gets() == []

    def test_without_renewals_a_lease_lapses(self, rig):
        rig.enqueue()
        rig.fetch()
        rig.clock.advance(LEASE + 1)
        assert len(rig.other_cluster_gets()) == 1

    def test_a_running_job_is_marked_running_once_it_ran_a_moment(self, rig):
        worker = rig.worker()
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0])
        rig.step()
        rig.leases()
        assert rig.broker.lookup(task_id).running is None
        rig.leases(0.2)
        found = rig.broker.lookup(task_id)
        assert found.state == LEASED and found.running is not None

    def test_a_delivery_is_acked_only_after_the_saver_says_it_is_saved(self, rig):
        worker = rig.worker()
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.step()
        outcome = worker.run(worker.jobs()[0])
        assert rig.to_saver() == [outcome]
        rig.leases(1)
        assert rig.broker.lookup(task_id) is not None  # not saved yet: still held
        rig.saved(outcome.delivery_id)
        rig.step()
        assert rig.broker.lookup(task_id) is not None  # acks go through the lease thread
        rig.leases()
        assert rig.broker.lookup(task_id) is None
        assert rig.pusher.done is False and not rig.pusher.saving.unsaved.messages

    def test_a_failed_attempt_its_retry_policy_runs_again_is_handed_back_with_its_delay(self, rig):
        worker = rig.worker()
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.step()
        job = worker.jobs()[0]
        worker.start(job)
        worker.write_state(None, None)
        again = pack(TaskPackage(id=task_id, name="again", func="math.floor", args=(2.5,)))
        now = rig.clock.now
        worker.conn.inbox.append(Outcome(job.delivery_id, task_of(job), False, "boom", now, now, 1, QUEUE,
                                         retry_payload=again, retry_in=5.0))
        rig.step()
        assert rig.to_saver() == []  # not a result: the task runs again
        rig.leases()
        assert rig.other_cluster_gets() == []
        rig.clock.advance(5.0)
        (delivery,) = rig.broker.dequeue(1, 0)
        assert delivery.payload == again and delivery.attempts == 2

    def test_each_cancel_request_reaches_the_loop_once(self, rig):
        (task_id,) = rig.enqueue()
        rig.fetch()
        rig.broker.cancel(task_id)
        rig.leases(CANCEL_POLL)
        assert rig.pusher.leases.take_cancels() == {rig.pusher.fetcher.buffer[0].id}
        rig.leases(CANCEL_POLL)
        assert rig.pusher.leases.take_cancels() == set()

    def test_at_most_a_window_of_results_waits_on_the_saver_the_rest_goes_as_it_answers(self, make_rig):
        rig = make_rig(queue_limit=WINDOW + 10)
        worker = rig.worker()
        rig.enqueue(WINDOW + 3)
        rig.fetch()
        outcomes = []
        while len(outcomes) < WINDOW + 3:
            rig.step()
            outcomes += [worker.run(job, took=SHORT) for job in worker.jobs()[len(outcomes):]]
        handed = rig.to_saver()
        assert handed == outcomes[:WINDOW] and len(rig.pusher.saving.unsaved) == WINDOW + 3
        rig.saved(*(o.delivery_id for o in outcomes[:2]))
        assert rig.to_saver() == outcomes[:WINDOW + 2]
        assert rig.to_saver() == outcomes[:WINDOW + 2]  # each is handed once


class TestStopAndLoss:
    def test_a_graceful_stop_hands_back_what_did_not_start(self, rig):
        worker = rig.worker()
        rig.enqueue(3)
        rig.fetch()
        rig.step()
        rig.pusher.stop()
        rig.step()
        assert not rig.pusher.fetcher.buffer
        assert len(rig.other_cluster_gets()) == 2  # ready again at once; the one in the worker is still held
        outcome = worker.run(worker.jobs()[0])
        assert rig.to_saver()[-1] == outcome
        rig.saved(outcome.delivery_id)
        rig.step()
        assert rig.pusher.done
        rig.pusher.close()
        assert STOP in worker.conn.sent and rig.saver.stopped

    def test_a_job_whose_worker_died_running_it_is_handed_back(self, rig):
        worker = rig.worker()
        rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0])
        rig.step()
        worker.die()
        rig.step()
        assert rig.pusher.slots == {}
        (again,) = rig.broker.dequeue(1, 0)
        assert again.attempts == 2

    def test_a_job_a_dead_worker_finished_but_did_not_report_is_handed_back(self, rig):
        worker = rig.worker()
        rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0])
        worker.write_state(None, None)  # it finished, and died before its outcome went out
        worker.die()
        rig.step()
        (again,) = rig.broker.dequeue(1, 0)
        assert again.attempts == 2
        assert rig.to_saver() == []

    def test_a_worker_lost_at_max_attempts_is_recorded_as_failed(self, make_rig):
        rig = make_rig(max_attempts=1)
        worker = rig.worker()
        rig.enqueue()
        rig.fetch()
        rig.step()
        worker.start(worker.jobs()[0])
        worker.die()
        rig.step()
        (outcome,) = rig.to_saver()
        assert outcome.success is False and outcome.result == "worker lost after 1 attempts"

    def test_jobs_a_dead_worker_never_took_go_to_another_worker_first(self, rig):
        first = rig.worker()
        rig.warm(first)
        held = first.jobs()[1:]
        first.start(held[0])
        first.die()
        second = rig.worker()
        rig.step()
        assert [j.delivery_id for j in second.jobs()[: len(held) - 1]] == [j.delivery_id for j in held[1:]]
        assert [d.id for d in rig.broker.dequeue(100, 0)] == [held[0].delivery_id]


class TestKeepersStart:
    """The lease and status threads each open a connection and make a broker call at once (a beat, a
    publication): at start they must not race the fetcher's first dequeue for the GIL."""

    @pytest.fixture
    def leases(self, rig, monkeypatch) -> list[float]:
        """The times the lease thread was started, from a pusher as start() leaves it."""
        rig.pusher.status = None
        rig.pusher.started_at = rig.clock.now
        started: list[float] = []
        monkeypatch.setattr(rig.pusher.leases, "start", lambda: started.append(rig.clock.now))
        monkeypatch.setattr("django_q.status.Publisher", NotedPublisher)
        return started

    def test_they_start_once_the_first_dequeue_answered(self, rig, leases):
        rig.step()
        assert leases == [] and rig.pusher.status is None
        rig.pusher.fetcher.first_round.set()
        rig.step()
        assert leases == [rig.clock.now] and rig.pusher.status.started
        rig.step()
        assert len(leases) == 1  # once

    def test_with_no_answer_they_start_keepers_delay_after_start(self, rig, leases):
        rig.clock.advance(KEEPERS_DELAY / 2)
        rig.step()
        assert leases == [] and rig.pusher.status is None
        rig.clock.advance(KEEPERS_DELAY / 2 + 0.001)  # past it, whatever the float sum rounds to
        rig.step()
        assert leases == [rig.clock.now] and rig.pusher.status.started

    def test_a_pusher_stopping_before_they_started_still_starts_them(self, rig, leases):
        """Its running tasks finish first: their leases are renewed meanwhile, their results acked."""
        rig.pusher.stop()
        rig.clock.advance(KEEPERS_DELAY)
        rig.step()
        assert leases == [rig.clock.now] and rig.pusher.status.started


class NotedScheduler:
    """Stands in for the scheduler's thread: notes when the pusher starts it."""

    def __init__(self) -> None:
        self.ident: int | None = None

    def start(self) -> None:
        self.ident = 1

    def stop(self) -> None:
        pass

    def is_alive(self) -> bool:
        return False


class TestSchedulerStart:
    """The scheduler's first pass must not compete with the first fetch, dispatch and task at start."""

    def started(self, rig) -> NotedScheduler:
        rig.pusher.scheduler = scheduler = NotedScheduler()
        rig.pusher.started_at = rig.clock.now  # as start() sets it
        return scheduler

    def test_the_scheduler_starts_once_the_first_outcome_came_back(self, rig):
        scheduler = self.started(rig)
        worker = rig.worker()
        rig.enqueue()
        rig.fetch()
        rig.step()
        assert worker.jobs() and scheduler.ident is None  # the first job went out: not yet
        worker.run(worker.jobs()[0])
        rig.step()
        assert scheduler.ident is not None

    def test_with_nothing_to_run_the_scheduler_starts_scheduler_delay_after_start(self, rig):
        scheduler = self.started(rig)
        rig.clock.advance(SCHEDULER_DELAY / 2)
        rig.step()
        assert scheduler.ident is None
        rig.clock.advance(SCHEDULER_DELAY / 2)
        rig.step()
        assert scheduler.ident is not None

    def test_a_stopping_pusher_starts_no_scheduler(self, rig):
        scheduler = self.started(rig)
        rig.pusher.stop()
        rig.clock.advance(SCHEDULER_DELAY)
        rig.step()
        assert scheduler.ident is None
