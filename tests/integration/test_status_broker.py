"""The brokers' status records (publish_status, remove_status, statuses) on every store, and the record's format."""

from __future__ import annotations

import time

from django_q.brokers.base import QueueBackend
from django_q.cluster.messages import DeadLetterNote, Outcome
from django_q.package import TaskPackage
from django_q.status import ClusterStatus, Counters, Tally, WorkerStatus
from tests.brokers.conftest import backend, broker, make_broker  # noqa: F401  (fixtures)


def test_publish_replace_and_remove(broker: QueueBackend) -> None:
    assert broker.statuses() == []
    broker.publish_status("a", b"one", 30)
    broker.publish_status("b", b"\x00two\xff", 30)
    assert sorted(broker.statuses()) == [b"\x00two\xff", b"one"]
    broker.publish_status("a", b"one again", 30)
    assert sorted(broker.statuses()) == [b"\x00two\xff", b"one again"]
    broker.remove_status("a")
    broker.remove_status("never published")
    assert broker.statuses() == [b"\x00two\xff"]


def test_expired_entries_are_ignored_then_cleaned(broker: QueueBackend) -> None:
    broker.publish_status("dead", b"old", 0.2)
    broker.publish_status("alive", b"new", 30)
    time.sleep(0.4)
    assert broker.statuses() == [b"new"]
    broker.publish_status("alive", b"newer", 30)  # any publication cleans expired entries
    assert broker.statuses() == [b"newer"]


def test_statuses_are_per_queue(make_broker, queue_name) -> None:
    # Names of this test's own: test runs side by side share one Redis and one database.
    one, other = make_broker(name=f"{queue_name}-one"), make_broker(name=f"{queue_name}-other")
    one.publish_status("x", b"1", 30)
    assert other.statuses() == []
    assert one.statuses() == [b"1"]
    one.purge()  # packages only: the status stays until removed or expired
    assert one.statuses() == [b"1"]
    one.remove_status("x")


def test_status_json_round_trip() -> None:
    status = ClusterStatus(
        id="c" * 32, host="h", pid=12, name="q", state="running",
        workers=(WorkerStatus(0, 100, "t" * 32, "four-five", 1.5), WorkerStatus(1, 101)),
        queued=3, done=7, failed=1, started=1000.0, updated=1002.0,
        counters=Counters(enqueued=8, started=8, succeeded=7, failed=1),
    )
    assert ClusterStatus.from_json(status.to_json()) == status
    assert status.running == 1


def test_status_from_a_newer_version_keeps_what_it_knows() -> None:
    data = (b'{"id":"x","host":"h","pid":1,"name":"q","state":"running","workers":[{"index":0,"pid":2,"extra":1}],'
            b'"queued":0,"done":0,"failed":0,"started":1.0,"updated":2.0,"new_field":true}')
    status = ClusterStatus.from_json(data)
    assert status.workers == (WorkerStatus(0, 2),) and status.counters == Counters()


def test_tally_counts_deliveries_outcomes_and_durations() -> None:
    tally = Tally()
    task = TaskPackage(id="a" * 32, name="n", func="math.floor")
    tally.received(1)
    tally.received(2)
    tally.started()
    tally.finished(Outcome("1", task, True, 1, started=10.0, stopped=10.003, attempts=1, cluster="q"))
    tally.finished(Outcome("2", task, False, "tb", started=10.0, stopped=12.0, attempts=2, cluster="q"))
    tally.finished(DeadLetterNote("3", "q", b"x", "bad"))
    c = tally.counters
    assert (c.enqueued, c.retried, c.started, c.succeeded, c.failed, c.dead_lettered) == (1, 1, 1, 1, 1, 1)
    assert c.duration_buckets[0] == 1  # 3 ms <= 5 ms
    assert c.duration_buckets[8] == 1  # 1 s < 2 s <= 2.5 s
    assert abs(c.duration_sum - 2.003) < 1e-6
