"""The broker contract's task lifecycle: keys, lookup, running records, cancel and retry, on every broker."""

from __future__ import annotations

import time

import pytest

from django_q.brokers.base import DELAYED, LEASED, QUEUED, REMOVED, REQUESTED, QueueBackend

from .conftest import MakeBroker

KEY = "k" * 32


def test_lookup_follows_a_package_from_queued_to_acked(broker: QueueBackend) -> None:
    assert broker.lookup(KEY) is None
    package_id = broker.enqueue(b"payload", key=KEY)
    found = broker.lookup(KEY)
    assert (found.id, found.state, found.payload, found.attempts, found.running) == (
        package_id, QUEUED, b"payload", 0, None
    )
    (delivery,) = broker.dequeue()
    leased = broker.lookup(KEY)
    assert (leased.state, leased.attempts, leased.running) == (LEASED, 1, None)
    assert leased.due > time.time()  # the end of the lease
    broker.mark_running({delivery.id: b"worker 1"})
    assert broker.lookup(KEY).running == b"worker 1"
    broker.ack([delivery.id])
    assert broker.lookup(KEY) is None


def test_a_delayed_package_is_delayed_with_its_due_time(broker: QueueBackend) -> None:
    before = time.time()
    broker.enqueue(b"later", delay=60, key=KEY)
    found = broker.lookup(KEY)
    assert found.state == DELAYED
    assert before + 55 < found.due < before + 65


def test_enqueue_many_keeps_each_key_and_the_delay(broker: QueueBackend) -> None:
    keys = [f"{i:032x}" for i in range(3)]
    ids = broker.enqueue_many([b"0", b"1", b"2"], priority=3, delay=60, keys=keys)
    assert [broker.lookup(k).id for k in keys] == ids
    assert {broker.lookup(k).state for k in keys} == {DELAYED}
    assert broker.dequeue(count=3) == []


def test_requeue_forgets_the_running_record(broker: QueueBackend) -> None:
    broker.enqueue(b"x", key=KEY)
    (delivery,) = broker.dequeue()
    broker.mark_running({delivery.id: b"worker"})
    broker.requeue([delivery.id])
    found = broker.lookup(KEY)
    assert (found.state, found.running) == (QUEUED, None)


def test_mark_running_ignores_ids_not_leased(broker: QueueBackend) -> None:
    package_id = broker.enqueue(b"x", key=KEY)
    broker.mark_running({package_id: b"worker", "999999": b"nobody"})
    assert broker.lookup(KEY).running is None


def test_cancel_removes_a_waiting_package(broker: QueueBackend) -> None:
    broker.enqueue(b"first", key=KEY)
    broker.enqueue(b"second")
    done = broker.cancel(KEY)
    assert (done.outcome, done.pending.payload, done.pending.state) == (REMOVED, b"first", QUEUED)
    assert broker.lookup(KEY) is None
    assert [d.payload for d in broker.dequeue(count=5)] == [b"second"]
    assert broker.cancel(KEY) is None


def test_cancel_removes_a_delayed_package(broker: QueueBackend) -> None:
    broker.enqueue(b"later", delay=0.3, key=KEY)
    assert broker.cancel(KEY).outcome == REMOVED
    time.sleep(0.5)
    assert broker.dequeue(timeout=0.2) == []
    assert broker.size() == 0


def test_cancel_of_a_leased_package_is_a_request_its_cluster_reads(broker: QueueBackend) -> None:
    broker.enqueue(b"x", key=KEY)
    other = broker.enqueue(b"y")
    first, second = broker.dequeue(count=2)
    assert broker.cancel_requests([first.id, second.id]) == []
    done = broker.cancel(KEY)
    assert (done.outcome, done.pending.state) == (REQUESTED, LEASED)
    assert broker.cancel_requests([first.id, second.id]) == [first.id]
    assert broker.lookup(KEY).state == LEASED  # still there until its cluster acks it
    broker.ack([first.id])
    assert broker.cancel_requests([first.id]) == []
    assert broker.lookup(KEY) is None
    assert other == second.id


def test_cancel_of_a_lapsed_lease_removes_it(make_broker: MakeBroker) -> None:
    broker = make_broker(lease=0.2)
    broker.enqueue(b"x", key=KEY)
    broker.dequeue()
    time.sleep(0.4)  # the cluster holding it died
    assert broker.cancel(KEY).outcome == REMOVED
    assert broker.dequeue(timeout=0.2) == []


def test_retry_replaces_the_package_and_holds_it_back(broker: QueueBackend) -> None:
    package_id = broker.enqueue(b"attempt 1", key=KEY)
    (delivery,) = broker.dequeue()
    broker.mark_running({delivery.id: b"worker"})
    broker.retry(delivery.id, b"attempt 2", 0.5)
    found = broker.lookup(KEY)
    assert (found.state, found.payload, found.running) == (DELAYED, b"attempt 2", None)
    assert broker.dequeue() == []
    (again,) = broker.dequeue(timeout=5)
    assert (again.id, again.payload, again.attempts) == (package_id, b"attempt 2", 2)


def test_retry_without_delay_is_ready_at_once_in_its_place(broker: QueueBackend) -> None:
    broker.enqueue(b"a", key=KEY)
    broker.enqueue(b"b")
    first, _ = broker.dequeue(count=2)
    broker.retry(first.id, b"a again", 0)
    assert [d.payload for d in broker.dequeue(count=2)] == [b"a again"]


def test_retry_of_an_id_not_leased_does_nothing(broker: QueueBackend) -> None:
    package_id = broker.enqueue(b"waiting", key=KEY)
    broker.retry(package_id, b"changed", 0)
    assert broker.lookup(KEY).payload == b"waiting"
    broker.retry("123456", b"nothing", 0)
    assert broker.size() == 1


def test_pending_lists_leased_then_ready_in_order_then_delayed(broker: QueueBackend) -> None:
    broker.enqueue(b"later", delay=60)
    broker.enqueue(b"low", priority=-5)
    broker.enqueue(b"running")
    broker.enqueue(b"high", priority=5)
    (running,) = broker.dequeue()
    assert running.payload == b"high"
    listed = broker.pending()
    assert [(p.payload, p.state) for p in listed] == [
        (b"high", LEASED), (b"running", QUEUED), (b"low", QUEUED), (b"later", DELAYED)
    ]
    assert [p.payload for p in broker.pending(limit=2)] == [b"high", b"running"]


@pytest.mark.parametrize("count", [1, 3])
def test_a_key_enqueued_again_is_found_at_its_newest_package(broker: QueueBackend, count: int) -> None:
    ids = [broker.enqueue(b"%d" % i, key=KEY) for i in range(count)]
    assert broker.lookup(KEY).id == ids[-1]


def test_a_lapsed_lease_delivered_again_has_no_running_record(make_broker: MakeBroker) -> None:
    broker = make_broker(lease=0.2)
    broker.enqueue(b"x", key=KEY)
    (first,) = broker.dequeue()
    broker.mark_running({first.id: b"worker of a dead cluster"})
    time.sleep(0.4)
    (again,) = broker.dequeue(timeout=5)
    found = broker.lookup(KEY)
    assert (again.id, found.state, found.running) == (first.id, LEASED, None)
