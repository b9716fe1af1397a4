"""What the contract does not say about the memory broker: its clock, its shared store, its threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from django_q.brokers import memory
from django_q.brokers.base import DELAYED, LEASED, QUEUED
from django_q.brokers.memory import MemoryBroker


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()
    memory.reset()


def test_a_lease_lapses_on_the_injected_clock(clock: Clock, queue_name: str) -> None:
    broker, other = MemoryBroker(queue_name, 30.0, clock), MemoryBroker(queue_name, 30.0, clock)
    broker.enqueue(b"job", key="k")
    (first,) = broker.dequeue()
    broker.mark_running({first.id: b"worker 1"})
    clock.now += 29.9
    assert other.dequeue() == []
    assert broker.lookup("k").state == LEASED
    clock.now += 0.2
    assert other.lookup("k").state == QUEUED
    (again,) = other.dequeue()
    assert (again.id, again.payload, again.attempts) == (first.id, b"job", 2)
    assert other.lookup("k").running is None  # the dead cluster's record does not follow the new lease


def test_a_delay_ends_on_the_injected_clock(clock: Clock, queue_name: str) -> None:
    broker = MemoryBroker(queue_name, 30.0, clock)
    broker.enqueue(b"later", delay=60, key="k")
    found = broker.lookup("k")
    assert (found.state, found.due) == (DELAYED, clock.now + 60)
    assert (broker.size(), broker.dequeue()) == (0, [])
    clock.now += 60
    assert [d.payload for d in broker.dequeue()] == [b"later"]


def test_statuses_expire_on_the_injected_clock(clock: Clock, queue_name: str) -> None:
    broker = MemoryBroker(queue_name, 30.0, clock)
    broker.publish_status("short", b"1", 2)
    broker.publish_status("long", b"2", 6)
    clock.now += 2
    assert broker.statuses() == [b"2"]
    clock.now += 4
    assert broker.statuses() == []


def test_brokers_of_one_name_share_a_queue_and_reset_empties_every_queue(clock: Clock, queue_name: str) -> None:
    first, second = MemoryBroker(queue_name, 30.0, clock), MemoryBroker(queue_name, 30.0, clock)
    neighbour = MemoryBroker(queue_name + "n", 30.0, clock)
    first.enqueue(b"shared")
    neighbour.enqueue(b"own")
    first.publish_status("c", b"status", 10)
    assert [d.payload for d in second.dequeue(count=5)] == [b"shared"]
    assert second.statuses() == [b"status"]
    memory.reset()
    assert (first.leased(), neighbour.size(), first.statuses()) == (0, 0, [])


def test_threads_enqueueing_and_dequeueing_at_once_lose_and_repeat_nothing(clock: Clock, queue_name: str) -> None:
    expected = {b"%d" % i for i in range(2000)}
    got: list[bytes] = []
    deadline = time.monotonic() + 30

    def produce(start: int) -> None:
        producer = MemoryBroker(queue_name, 30.0, clock)
        for i in range(start, 2000, 4):
            producer.enqueue(b"%d" % i)

    def consume() -> None:
        consumer = MemoryBroker(queue_name, 30.0, clock)
        while len(got) < len(expected) and time.monotonic() < deadline:
            deliveries = consumer.dequeue(count=3, timeout=0.1)
            got.extend(d.payload for d in deliveries)
            consumer.ack([d.id for d in deliveries])

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(consume) for _ in range(4)] + [pool.submit(produce, start) for start in range(4)]
        for future in futures:
            future.result(timeout=40)
    assert len(got) == len(expected) and set(got) == expected
