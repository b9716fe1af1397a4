"""The Throttle contract (take_starts) and Broker.defer, checked against every broker on a real server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from django_q.brokers.base import DELAYED, QueueBackend
from django_q.rates import parse_limit

from .conftest import MakeBroker, in_thread

SEND = "app.tasks.send_mail"
GROUP = "group:mail"
PER_HOUR = {SEND: parse_limit("3/h", "send"), GROUP: parse_limit("2/h", "group")}


def test_starts_are_taken_until_the_limit_then_each_waits_for_the_oldest_to_leave_the_window(
    broker: QueueBackend,
) -> None:
    waits = broker.take_starts([(SEND,)] * 5, PER_HOUR)
    assert waits[:3] == [0.0, 0.0, 0.0]
    window = PER_HOUR[SEND].window
    # A minute of slack for a slow machine between the starts and this check.
    assert all(window - 60 < wait <= window for wait in waits[3:])
    (later,) = broker.take_starts([(SEND,)], PER_HOUR)
    assert window - 60 < later <= window


def test_a_start_under_two_keys_needs_room_under_both_and_a_refused_one_is_not_counted(broker: QueueBackend) -> None:
    assert broker.take_starts([(SEND, GROUP), (SEND, GROUP), (SEND, GROUP)], PER_HOUR)[:2] == [0.0, 0.0]
    # The group is full, the function has one start left: refused under the group, not counted under the function.
    assert broker.take_starts([(SEND, GROUP)], PER_HOUR)[0] > 0
    assert broker.take_starts([(SEND,), (SEND,)], PER_HOUR)[0] == 0.0
    assert broker.take_starts([(SEND,)], PER_HOUR)[0] > 0


def test_an_empty_batch_and_starts_under_no_key(broker: QueueBackend) -> None:
    assert broker.take_starts([], PER_HOUR) == []
    assert broker.take_starts([(), ()], PER_HOUR) == [0.0, 0.0]


def test_the_window_slides(make_broker: MakeBroker) -> None:
    broker = make_broker()
    limits = {SEND: parse_limit("2/s", "send")}
    assert broker.take_starts([(SEND,), (SEND,), (SEND,)], limits)[:2] == [0.0, 0.0]
    (wait,) = broker.take_starts([(SEND,)], limits)
    assert 0 < wait <= limits[SEND].window
    time.sleep(limits[SEND].window + 0.05)
    assert broker.take_starts([(SEND,), (SEND,), (SEND,)], limits)[:2] == [0.0, 0.0]


def test_clusters_of_one_queue_share_the_logs_and_other_queues_do_not(
    make_broker: MakeBroker, queue_name: str
) -> None:
    one, two, other = make_broker(), make_broker(), make_broker(name=queue_name + "o")
    assert one.take_starts([(SEND,), (SEND,)], PER_HOUR) == [0.0, 0.0]
    assert two.take_starts([(SEND,), (SEND,)], PER_HOUR)[0] == 0.0
    assert two.take_starts([(SEND,)], PER_HOUR)[0] > 0
    assert other.take_starts([(SEND,)] * 3, PER_HOUR) == [0.0, 0.0, 0.0]


def test_concurrent_takers_never_take_more_than_the_limit(make_broker: MakeBroker) -> None:
    limits = {SEND: parse_limit("25/h", "send"), GROUP: parse_limit("1000/h", "group")}

    def takes(broker: QueueBackend) -> int:
        return sum(broker.take_starts([(SEND, GROUP)] * 2, limits).count(0.0) for _ in range(10))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(in_thread, takes, make_broker()) for _ in range(4)]
        taken = [future.result(timeout=60) for future in futures]
    assert sum(taken) == 25
    assert make_broker().take_starts([(GROUP,)] * 1000, limits).count(0.0) == 1000 - 25


def test_purge_forgets_the_logs(broker: QueueBackend) -> None:
    broker.take_starts([(SEND,)] * 3, PER_HOUR)
    broker.purge()
    assert broker.take_starts([(SEND,)] * 3, PER_HOUR) == [0.0, 0.0, 0.0]


def test_defer_holds_a_delivery_back_and_takes_back_its_attempt(broker: QueueBackend) -> None:
    broker.enqueue(b"held", key="k1")
    broker.enqueue(b"next")
    held, _ = broker.dequeue(count=2)
    assert held.attempts == 1
    broker.mark_running({held.id: b"worker"})
    broker.defer({held.id: 60})
    found = broker.lookup("k1")
    assert (found.state, found.attempts, found.running) == (DELAYED, 0, None)
    assert broker.dequeue(timeout=0.1) == []
    broker.defer({held.id: 60})  # no longer leased: nothing happens
    assert broker.lookup("k1").attempts == 0


def test_a_deferred_delivery_comes_back_after_its_delay_with_the_same_attempt(broker: QueueBackend) -> None:
    package_id = broker.enqueue(b"held")
    (first,) = broker.dequeue()
    broker.defer({first.id: 0.5})
    assert broker.dequeue() == []
    (again,) = broker.dequeue(timeout=10)
    assert (again.id, again.payload, again.attempts) == (package_id, b"held", 1)


def test_defer_without_delay_is_ready_at_once_in_its_place(broker: QueueBackend) -> None:
    broker.enqueue(b"a")
    broker.enqueue(b"b")
    first, second = broker.dequeue(count=2)
    broker.defer({first.id: 0, second.id: 0})
    assert [(d.payload, d.attempts) for d in broker.dequeue(count=2)] == [(b"a", 1), (b"b", 1)]
