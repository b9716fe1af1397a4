"""The broker contract of django_q.brokers.base, checked against every broker on a real server."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from django_q.brokers.base import Broker
from django_q.exceptions import BatchMismatch, BrokerConnectionError, InvalidPriority

from .conftest import MakeBroker, in_thread

MiB = 1024 * 1024


def drain(broker: Broker, timeout: float = 0.0) -> list[bytes]:
    """Payloads of everything `broker` hands out now, one dequeue at a time."""
    payloads = []
    while deliveries := broker.dequeue(timeout=timeout):
        payloads.extend(d.payload for d in deliveries)
    return payloads


def test_round_trip_keeps_bytes_exactly(broker: Broker) -> None:
    payloads = [b"", b"\x00", b"\x00\xff\x00", bytes(range(256)), "é☃".encode(), os.urandom(MiB)]
    ids = [broker.enqueue(p) for p in payloads]
    deliveries = broker.dequeue(count=len(payloads), timeout=5)
    assert [d.payload for d in deliveries] == payloads
    assert [d.id for d in deliveries] == ids
    assert all(isinstance(d.id, str) and d.attempts == 1 for d in deliveries)


def test_fifo(broker: Broker) -> None:
    for i in range(10):
        broker.enqueue(b"%d" % i)
    assert drain(broker) == [b"%d" % i for i in range(10)]


def test_higher_priority_first_equal_priority_in_order(broker: Broker) -> None:
    sent = [(b"a", 0), (b"b", 5), (b"c", -3), (b"d", 5), (b"e", 0), (b"f", 100), (b"g", -100)]
    for payload, priority in sent:
        broker.enqueue(payload, priority=priority)
    assert drain(broker) == [b"f", b"b", b"d", b"a", b"e", b"c", b"g"]


@pytest.mark.parametrize("priority", [101, -101, True, 1.0, "1"])
def test_a_priority_out_of_range_or_not_a_whole_number_is_refused(broker: Broker, priority: object) -> None:
    with pytest.raises(InvalidPriority):
        broker.enqueue(b"x", priority=priority)
    with pytest.raises(InvalidPriority):
        broker.enqueue_many([b"x"], priority=priority)
    assert broker.size() == 0


def test_enqueue_many_with_more_or_fewer_keys_than_payloads_is_refused(broker: Broker) -> None:
    for keys in (["a"], ["a", "b", "c"]):
        with pytest.raises(BatchMismatch):
            broker.enqueue_many([b"1", b"2"], keys=keys)
    assert broker.size() == 0


def test_enqueue_many_keeps_order_and_priority(broker: Broker) -> None:
    broker.enqueue(b"low", priority=-1)
    ids = broker.enqueue_many([b"1", b"2", b"3"], priority=1)
    assert len(set(ids)) == 3
    deliveries = broker.dequeue(count=10)
    assert [d.payload for d in deliveries] == [b"1", b"2", b"3", b"low"]
    assert [d.id for d in deliveries[:3]] == ids


def test_empty_dequeue_returns_empty_list_after_timeout(broker: Broker) -> None:
    assert broker.dequeue(timeout=0) == []
    started = time.monotonic()
    assert broker.dequeue(timeout=0.3) == []
    assert 0.25 <= time.monotonic() - started < 5


def test_count_limits_the_batch(broker: Broker) -> None:
    broker.enqueue_many([b"%d" % i for i in range(5)])
    assert len(broker.dequeue(count=3)) == 3
    assert len(broker.dequeue(count=10)) == 2
    assert broker.dequeue(count=0) == []


def test_waiting_consumer_wakes_when_a_package_arrives(broker: Broker, make_broker: MakeBroker) -> None:
    consumer = make_broker()
    with ThreadPoolExecutor(1) as pool:
        received = pool.submit(in_thread, lambda: consumer.dequeue(timeout=10) and time.monotonic())
        time.sleep(0.3)
        sent = time.monotonic()
        broker.enqueue(b"ping")
        # Well before the consumer's 10 s timeout: it woke for the package (a busy 2-core machine
        # can take a second to get a polling consumer's turn).
        assert received.result(timeout=15) - sent < 5.0


def test_lapsed_lease_delivers_again(make_broker: MakeBroker) -> None:
    broker, other = make_broker(lease=0.5), make_broker(lease=0.5)
    broker.enqueue(b"job")
    (first,) = broker.dequeue()
    assert other.dequeue() == []
    started = time.monotonic()
    (again,) = other.dequeue(timeout=5)
    assert time.monotonic() - started > 0.2
    assert (again.id, again.payload, again.attempts) == (first.id, b"job", 2)


def test_renew_keeps_the_lease(make_broker: MakeBroker) -> None:
    broker = make_broker(lease=1.0)
    broker.enqueue(b"long job")
    (delivery,) = broker.dequeue()
    for _ in range(5):
        time.sleep(0.3)
        broker.renew([delivery.id])
        assert broker.dequeue() == []
    assert broker.leased() == 1
    broker.ack([delivery.id])
    assert broker.leased() == 0


def test_ack_removes_for_good(make_broker: MakeBroker) -> None:
    broker = make_broker(lease=0.3)
    broker.enqueue(b"done")
    (delivery,) = broker.dequeue()
    broker.ack([delivery.id])
    assert broker.dequeue(timeout=0.7) == []
    assert (broker.size(), broker.leased()) == (0, 0)


def test_requeue_is_ready_at_once_in_its_place(broker: Broker) -> None:
    broker.enqueue_many([b"a", b"b", b"c"])
    (first,) = broker.dequeue()
    broker.requeue([first.id])
    deliveries = broker.dequeue(count=3)
    assert [d.payload for d in deliveries] == [b"a", b"b", b"c"]
    assert [d.attempts for d in deliveries] == [2, 1, 1]
    assert deliveries[0].id == first.id


def test_requeue_keeps_priority_place(broker: Broker) -> None:
    broker.enqueue(b"low", priority=-5)
    broker.enqueue(b"high", priority=5)
    broker.enqueue(b"high2", priority=5)
    (high,) = broker.dequeue()
    broker.enqueue(b"high3", priority=5)
    broker.requeue([high.id])
    assert drain(broker) == [b"high", b"high2", b"high3", b"low"]


def test_unknown_and_finished_ids_are_no_ops(broker: Broker) -> None:
    broker.enqueue(b"x")
    (delivery,) = broker.dequeue()
    broker.ack([delivery.id])
    for op in (broker.ack, broker.renew, broker.requeue):
        op([delivery.id, "999999999", "not-an-id"])
        op([])
    assert (broker.size(), broker.leased()) == (0, 0)
    assert broker.dequeue() == []


def test_ack_renew_requeue_of_a_waiting_package_do_nothing(broker: Broker) -> None:
    package_id = broker.enqueue(b"waiting")
    broker.ack([package_id])
    broker.renew([package_id])
    broker.requeue([package_id])
    (delivery,) = broker.dequeue()
    assert (delivery.id, delivery.attempts) == (package_id, 1)


def test_delay_holds_back_until_due(broker: Broker) -> None:
    before = time.monotonic()
    broker.enqueue(b"later", delay=1.5)
    broker.enqueue(b"now")
    assert [d.payload for d in broker.dequeue(count=2)] == [b"now"]
    assert broker.size() == 0
    (later,) = broker.dequeue(timeout=5)
    assert later.payload == b"later"
    # Timed from before the enqueue, not from after the first dequeue, which a busy machine can slow.
    assert 1.4 < time.monotonic() - before < 6


def test_size_and_leased_counts(broker: Broker) -> None:
    broker.enqueue_many([b"1", b"2", b"3"])
    broker.enqueue(b"delayed", delay=60)
    assert (broker.size(), broker.leased()) == (3, 0)
    first, second = broker.dequeue(count=2)
    assert (broker.size(), broker.leased()) == (1, 2)
    broker.ack([first.id])
    assert (broker.size(), broker.leased()) == (1, 1)
    broker.requeue([second.id])
    assert (broker.size(), broker.leased()) == (2, 0)


def test_purge_empties_only_its_queue(make_broker: MakeBroker, queue_name: str) -> None:
    broker, neighbour = make_broker(), make_broker(name=queue_name + "n")
    broker.enqueue_many([b"1", b"2", b"3"])
    broker.enqueue(b"delayed", delay=60)
    neighbour.enqueue(b"stays")
    broker.dequeue()
    broker.purge()
    assert (broker.size(), broker.leased()) == (0, 0)
    assert broker.dequeue(timeout=0.1) == []
    assert drain(neighbour) == [b"stays"]
    broker.enqueue(b"after")
    assert drain(broker) == [b"after"]


def test_two_consumers_get_each_message_exactly_once(make_broker: MakeBroker) -> None:
    producer = make_broker()
    expected = [b"%d" % i for i in range(500)]
    producer.enqueue_many(expected)
    deadline = time.monotonic() + 60

    def consume(broker: Broker) -> list[bytes]:
        got = []
        while time.monotonic() < deadline and (deliveries := broker.dequeue(count=7, timeout=1.0)):
            got.extend(d.payload for d in deliveries)
            broker.ack([d.id for d in deliveries])
        return got

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(in_thread, consume, make_broker()) for _ in range(2)]
        got = [payload for future in futures for payload in future.result(timeout=90)]
    assert sorted(got, key=int) == expected
    assert (producer.size(), producer.leased()) == (0, 0)


def test_ping(broker: Broker) -> None:
    broker.ping()


def test_dead_server_raises_broker_connection_error(dead_broker: Broker) -> None:
    with pytest.raises(BrokerConnectionError) as info:
        dead_broker.ping()
    assert info.value.__cause__ is not None
    with pytest.raises(BrokerConnectionError):
        dead_broker.enqueue(b"x")
    with pytest.raises(BrokerConnectionError):
        dead_broker.dequeue(timeout=0.1)
