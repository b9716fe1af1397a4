"""The fetcher's buffer: how much it keeps ahead of the workers (cluster.fetcher).

A dequeue is a round trip; while it is on its way the pusher keeps taking
deliveries out of the buffer. `Drains` is the memory broker with a pusher
of its own: each dequeue first takes `drain` deliveries out of the fetcher's
buffer, as the pusher would during the round trip.
"""

from __future__ import annotations

import itertools

from django_q.brokers.base import Delivery
from django_q.brokers.memory import MemoryBroker
from django_q.cluster.fetcher import AHEAD_MAX, Fetcher
from django_q.conf import Config

names = itertools.count()


class Drains(MemoryBroker):
    """A memory broker whose every dequeue first takes `drain` deliveries out of `fetcher`'s buffer."""

    fetcher: Fetcher
    drain = 0

    def dequeue(self, count: int = 1, timeout: float = 0.0, owner: str | None = None) -> list[Delivery]:
        for _ in range(min(self.drain, len(self.fetcher.buffer))):
            self.fetcher.buffer.popleft()
        return super().dequeue(count, timeout, owner)


def rig(queue_limit: int = 4, tasks: int = 5000) -> tuple[Fetcher, Drains]:
    name = f"fetcher-unit-{next(names)}"
    config = Config(name=name, workers=2, queue_limit=queue_limit)
    fetcher = Fetcher(config, lambda reason: None)
    broker = Drains(name, 30.0)
    broker.fetcher = fetcher
    broker.enqueue_many([b"x"] * tasks)
    return fetcher, broker


def fetch(fetcher: Fetcher, broker: Drains) -> int:
    """One round, as the thread makes it (once the pusher made room, if there was none); the deliveries asked."""
    if fetcher.room_left() <= 0:
        fetcher.buffer.popleft()  # the thread waits until the pusher takes one
    room = fetcher.room_left()
    fetcher.fetch(broker, room, wait=0)
    return room


def test_a_buffer_the_workers_drain_during_each_round_trip_grows_until_it_outlasts_one():
    fetcher, broker = rig(queue_limit=4)
    broker.drain = 50  # deliveries the workers take while one dequeue is on its way
    for _ in range(10):
        fetch(fetcher, broker)
    assert 150 <= fetcher.ahead <= 300  # three round trips' drain, or more while it settles
    for _ in range(20):  # from now on the buffer never runs dry under the workers
        fetch(fetcher, broker)
        assert len(fetcher.buffer) > broker.drain
    assert 150 <= fetcher.ahead <= 160


def test_a_buffer_nobody_takes_from_shrinks_back_to_queue_limit():
    fetcher, broker = rig(queue_limit=4)
    broker.drain = 50
    for _ in range(8):
        fetch(fetcher, broker)
    broker.drain = 0  # the tasks grew long, or the workers are busy
    fetcher.buffer.clear()  # the pusher took what was there
    for _ in range(10):
        fetch(fetcher, broker)
        fetcher.buffer.clear()
    assert fetcher.ahead == 0
    assert fetcher.room_left() == 4


def test_an_idle_queue_adds_nothing_to_the_buffer():
    fetcher, broker = rig(queue_limit=4, tasks=0)
    for _ in range(5):
        fetch(fetcher, broker)
    assert fetcher.ahead == 0 and fetcher.room_left() == 4


def test_the_buffer_keeps_no_more_than_ahead_max():
    fetcher, broker = rig(queue_limit=4, tasks=20_000)
    broker.drain = 10_000
    for _ in range(12):
        fetch(fetcher, broker)
    assert fetcher.ahead == AHEAD_MAX
    assert fetcher.room_left() <= AHEAD_MAX


def test_queue_limit_and_the_workers_prefetch_still_set_the_least_the_buffer_holds():
    fetcher, broker = rig(queue_limit=30)
    assert fetch(fetcher, broker) == 30
    fetcher.buffer.clear()
    fetcher.prefetch = 128
    assert fetch(fetcher, broker) == 128
