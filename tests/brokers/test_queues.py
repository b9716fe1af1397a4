"""brokers.queues.Queues: several queues of one store as one broker, on every store: order, routing, waits."""

from __future__ import annotations

import threading
import time

import pytest

from django_q.brokers.base import LEASED, QUEUED, REMOVED, REQUESTED
from django_q.brokers.queues import Queues, split_id
from django_q.exceptions import ConfigurationError

from .conftest import MakeBroker, in_thread


@pytest.fixture
def three(make_broker: MakeBroker, queue_name: str):
    """Brokers of three queues of the store under test: high, default, low."""
    return [make_broker(name=f"{queue_name}-{q}") for q in ("high", "default", "low")]


def test_earlier_queues_go_out_first_priorities_within_a_queue(three) -> None:
    high, default, low = three
    low.enqueue(b"low-1")
    default.enqueue(b"default-1")
    low.enqueue(b"low-2", priority=50)  # a priority does not lift a task above an earlier queue
    default.enqueue(b"default-2", priority=10)
    high.enqueue(b"high-1")
    high.enqueue(b"high-2", priority=5)
    queues = Queues(three)
    assert [d.payload for d in queues.dequeue(count=3)] == [b"high-2", b"high-1", b"default-2"]
    assert [d.payload for d in queues.dequeue(count=10)] == [b"default-1", b"low-2", b"low-1"]
    assert queues.dequeue(count=10) == []


def test_delivery_ids_name_their_queue_and_route_ack_requeue_renew_retry(three) -> None:
    high, default, low = three
    for broker in three:
        broker.enqueue(broker.name.encode())
    queues = Queues(three)
    got = queues.dequeue(count=3)
    assert [split_id(d.id)[0] for d in got] == [high.name, default.name, low.name]
    assert queues.leased() == 3
    # Another instance (the lease thread's, the pusher's) routes the same ids.
    other = Queues(three)
    other.renew([d.id for d in got])
    other.ack([got[0].id])
    other.requeue([got[1].id])
    other.retry(got[2].id, b"again", 0.0)
    assert (high.size(), high.leased()) == (0, 0)
    assert (default.size(), default.leased()) == (1, 0)
    assert [d.payload for d in low.dequeue(count=5)] == [b"again"]
    again = queues.dequeue(count=5)
    assert [(d.payload, d.attempts) for d in again] == [(default.name.encode(), 2)]
    assert again[0].id == got[1].id  # the same delivery, in the same queue
    other.ack([f"{default.name}:nonsense", "no-queue-at-all", "unknown:1"])  # leased by nobody here: no-ops
    assert default.leased() == 1


def test_lookup_pending_cancel_and_running_records_route_per_queue(three) -> None:
    high, default, low = three
    high.enqueue(b"running", key="k-running")
    low.enqueue(b"waiting", key="k-waiting")
    queues = Queues(three)
    (running,) = queues.dequeue(count=1)
    queues.mark_running({running.id: b"record"})
    found = queues.lookup("k-running")
    assert (found.id, found.state, found.running) == (running.id, LEASED, b"record")
    assert queues.lookup("k-waiting").id.startswith(f"{low.name}:")
    assert [(p.state, p.payload) for p in queues.pending()] == [(LEASED, b"running"), (QUEUED, b"waiting")]
    removed = queues.cancel("k-waiting")
    assert removed.outcome == REMOVED and removed.pending.id.startswith(f"{low.name}:")
    assert queues.cancel("k-running").outcome == REQUESTED
    assert queues.cancel_requests([running.id, f"{default.name}:1"]) == [running.id]
    assert queues.cancel("nobody") is None


def test_sizes_per_queue_and_their_sum(three) -> None:
    high, default, low = three
    high.enqueue(b"a")
    low.enqueue_many([b"b", b"c"])
    low.enqueue(b"later", delay=60)
    queues = Queues(three)
    assert queues.sizes() == {high.name: 1, default.name: 0, low.name: 2}
    assert queues.size() == 3


def test_statuses_are_published_to_every_queue(three) -> None:
    queues = Queues(three)
    queues.publish_status("c1", b"status", 30.0)
    assert [b.statuses() for b in three] == [[b"status"]] * 3
    assert queues.statuses() == [b"status"]
    queues.remove_status("c1")
    assert [b.statuses() for b in three] == [[], [], []]


def test_a_waiting_dequeue_wakes_for_an_enqueue_to_any_queue(make_broker: MakeBroker, three) -> None:
    high, default, low = three
    producer = make_broker(name=low.name)  # a broker is used by one thread at a time: the waiter's are its own
    queues = Queues(three)
    got: list = []
    waiting = threading.Thread(target=lambda: got.extend(in_thread(queues.dequeue, 1, 60.0)))
    waiting.start()
    time.sleep(0.3)  # let it wait on every queue
    producer.enqueue(b"late")
    waiting.join(20)  # long before its 60 s were over: the enqueue woke it (or, on MariaDB, its next poll)
    assert not waiting.is_alive()
    assert [d.payload for d in got] == [b"late"]


def test_a_delayed_package_becomes_ready_in_its_own_queue(three) -> None:
    high, default, low = three
    # Due well after the first dequeue, even on a loaded machine (at 0.3 s, a slow MariaDB
    # round trip let it come due first, and both came out of the first dequeue).
    default.enqueue(b"soon", delay=2.0)
    low.enqueue(b"now")
    queues = Queues(three)
    assert [d.payload for d in queues.dequeue(count=5)] == [b"now"]
    assert [d.payload for d in queues.dequeue(count=5, timeout=30)] == [b"soon"]


def test_an_idle_wait_on_redis_blocks_rather_than_polls(backend: str, three, monkeypatch) -> None:
    if backend not in ("redis", "django_redis"):
        pytest.skip("the database broker polls every `poll` seconds by design; memory wakes every 50 ms")
    rounds = []
    for broker in three:
        plain = broker.dequeue
        monkeypatch.setattr(broker, "dequeue", lambda *a, plain=plain, **k: rounds.append(1) or plain(*a, **k))
    assert Queues(three).dequeue(count=1, timeout=1.0) == []
    assert len(rounds) <= 3 * 3  # three queues looked at once, plus at most two spurious wakes


def test_a_lapsed_lease_is_delivered_again_from_its_own_queue_in_order(make_broker: MakeBroker, queue_name) -> None:
    first, second = (make_broker(lease=0.5, name=f"{queue_name}-{q}") for q in ("first", "second"))
    second.enqueue(b"second")
    first.enqueue(b"first")
    queues = Queues([first, second])
    taken = queues.dequeue(count=2)
    assert [d.payload for d in taken] == [b"first", b"second"]
    # The leases lapse (nobody renews them). Two leases lapse a moment apart, so a dequeue that looks at the
    # first queue just before its lapse and at the second just after would rightly hand out the second alone:
    # wait until both have lapsed, then one dequeue hands both out, the first queue's first.
    time.sleep(first.lease + 0.5)
    again = queues.dequeue(count=2)
    assert [(d.id, d.payload, d.attempts) for d in again] == [(d.id, d.payload, 2) for d in taken]


def test_queues_of_one_name_or_a_single_queue_are_refused(make_broker: MakeBroker) -> None:
    one = make_broker()
    with pytest.raises(ConfigurationError, match="two or more distinct"):
        Queues([one, make_broker()])
    with pytest.raises(ConfigurationError, match="two or more distinct"):
        Queues([one])


def test_owners_defer_and_held_route_per_queue(three) -> None:
    high, default, low = three
    for broker in three:
        broker.enqueue(broker.name.encode())
    queues = Queues(three)
    got = queues.dequeue(count=3, owner="cluster-a")
    assert queues.beat("cluster-a", 6.0) is True  # its first beat: it had never beaten
    assert queues.beat("cluster-a", 6.0) is False
    # Every queue recorded the owner: each sub-broker knows who holds its delivery.
    assert queues.held([d.id for d in got], "cluster-a") == [d.id for d in got]
    assert queues.held([d.id for d in got], "cluster-b") == []
    assert [broker.held([split_id(d.id)[1]], "cluster-a") for broker, d in zip(three, got)] == [
        [split_id(d.id)[1]] for d in got
    ]
    # defer routes by id, gives the attempt back and makes the delivery wait in its own queue.
    queues.defer({got[1].id: 0.0})
    assert (default.size(), default.leased()) == (1, 0)
    again = queues.dequeue(count=5, owner="cluster-a")
    assert [(d.id, d.attempts) for d in again] == [(got[1].id, 1)]
