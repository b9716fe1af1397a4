"""The broker contract's enqueue_unique, checked against every broker on a real server."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from django_q.brokers.base import REMOVED, UNIQUE_MAX, QueueBackend
from django_q.exceptions import TaskTypeError

from .conftest import MakeBroker, in_thread


def test_a_second_enqueue_of_a_held_key_adds_nothing_and_names_the_holder(broker: QueueBackend) -> None:
    assert broker.enqueue_unique(b"first", "k", "task-1") == "task-1"
    assert broker.enqueue_unique(b"second", "k", "task-2", priority=5) == "task-1"
    assert broker.size() == 1
    assert broker.lookup("task-2") is None
    assert [d.payload for d in broker.dequeue(count=10)] == [b"first"]


def test_different_keys_do_not_collide(broker: QueueBackend) -> None:
    assert broker.enqueue_unique(b"a", "k1", "task-1") == "task-1"
    assert broker.enqueue_unique(b"b", "k2", "task-2") == "task-2"
    broker.enqueue(b"plain", key="task-3")  # no key: never held back, holds nothing
    assert broker.size() == 3


def test_a_unique_package_keeps_priority_and_delay(broker: QueueBackend) -> None:
    broker.enqueue(b"low")
    broker.enqueue_unique(b"high", "k", "task-1", priority=10)
    broker.enqueue_unique(b"later", "k2", "task-2", delay=60)
    assert broker.lookup("task-2").state == "delayed"
    assert [d.payload for d in broker.dequeue(count=10)] == [b"high", b"low"]


def test_the_key_is_held_while_leased_and_freed_by_ack(broker: QueueBackend) -> None:
    broker.enqueue_unique(b"x", "k", "task-1")
    (delivery,) = broker.dequeue()
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-1"  # running
    broker.requeue([delivery.id])
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-1"  # queued again
    (delivery,) = broker.dequeue()
    broker.retry(delivery.id, b"x2", 60)
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-1"  # waiting for its retry
    assert broker.cancel("task-1").outcome == REMOVED
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-2"
    (delivery,) = broker.dequeue()
    broker.ack([delivery.id])
    assert broker.enqueue_unique(b"z", "k", "task-3") == "task-3"


def test_the_key_stays_with_a_lapsed_lease_until_it_is_acked(make_broker: MakeBroker) -> None:
    broker = make_broker(lease=0.2)
    broker.enqueue_unique(b"x", "k", "task-1")
    (first,) = broker.dequeue()
    (again,) = broker.dequeue(timeout=5)  # the lease lapsed: handed out again, still holding the key
    assert again.id == first.id and again.attempts == 2
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-1"
    broker.ack([again.id])
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-2"


def test_cancel_and_purge_free_the_key(broker: QueueBackend) -> None:
    broker.enqueue_unique(b"x", "k", "task-1", delay=60)
    assert broker.cancel("task-1").outcome == REMOVED
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-2"
    broker.purge()
    assert broker.enqueue_unique(b"z", "k", "task-3") == "task-3"


def test_keys_belong_to_their_queue(make_broker: MakeBroker, queue_name: str) -> None:
    one, other = make_broker(), make_broker(name=f"{queue_name}-other")
    assert one.enqueue_unique(b"x", "k", "task-1") == "task-1"
    assert other.enqueue_unique(b"x", "k", "task-2") == "task-2"


@pytest.mark.parametrize("unique", ["", "x" * (UNIQUE_MAX + 1), None, 7])
def test_a_bad_key_is_refused(broker: QueueBackend, unique: object) -> None:
    with pytest.raises(TaskTypeError, match="unique key"):
        broker.enqueue_unique(b"x", unique, "task-1")
    assert broker.size() == 0


def test_producers_racing_for_one_key_add_one_package(make_broker: MakeBroker) -> None:
    producers = 8
    brokers = [make_broker() for _ in range(producers)]
    start = threading.Barrier(producers)

    def produce(i: int) -> str:
        def go() -> str:
            start.wait(timeout=10)
            return brokers[i].enqueue_unique(b"%d" % i, "k", f"task-{i}")

        return in_thread(go)

    with ThreadPoolExecutor(producers) as pool:
        holders = list(pool.map(produce, range(producers)))
    assert len(set(holders)) == 1
    assert brokers[0].size() == 1
    (delivery,) = brokers[0].dequeue(count=10)
    assert holders[0] == f"task-{int(delivery.payload)}"


def test_redis_a_holder_whose_package_is_gone_holds_nothing(backend: str, broker: QueueBackend) -> None:
    """Keys deleted by hand (or lost) must not leave a unique key taken with no package behind it."""
    if backend != "redis":
        pytest.skip("on the other brokers the key is a column or field of the package itself")
    broker.enqueue_unique(b"x", "k", "task-1")
    client = broker._client
    client.delete(f"django_q:{{{broker.name}}}:payload")
    assert broker.enqueue_unique(b"y", "k", "task-2") == "task-2"
    assert broker.enqueue_unique(b"z", "k", "task-3") == "task-2"
