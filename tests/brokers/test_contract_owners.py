"""Owners (django_q.brokers.base): a cluster silent past `dead_after` loses its leases at once, a live one never."""

from __future__ import annotations

import time

from django_q.brokers.base import QUEUED

from .conftest import MakeBroker

DEAD_AFTER = 0.4  # seconds; the real clusters use leases.DEAD_AFTER


def test_a_silent_owner_loses_its_leases_to_the_next_beat(make_broker: MakeBroker) -> None:
    dead, live = make_broker(), make_broker()
    ids = [dead.enqueue(b"%d" % i) for i in range(3)]
    dead.beat("a", DEAD_AFTER)
    taken = dead.dequeue(count=3, owner="a")
    assert [d.id for d in taken] == ids
    live.beat("b", DEAD_AFTER)
    assert live.dequeue(timeout=0) == []  # "a" beat just now
    time.sleep(DEAD_AFTER + 0.2)
    live.beat("b", DEAD_AFTER)
    again = live.dequeue(count=5, owner="b")
    assert [d.id for d in again] == ids  # at their own place, well before the 30 s lease ends
    assert [d.attempts for d in again] == [2, 2, 2]
    assert live.held(ids, "b") == ids and dead.held(ids, "a") == []


def test_an_owner_that_leased_before_its_first_beat_loses_its_leases_when_silent(make_broker: MakeBroker) -> None:
    # A cluster's fetcher may lease before its lease thread first beats: paused (or killed) in between,
    # it left no beat to be found silent, yet its leases go as those of one that beat once.
    dead, live = make_broker(), make_broker()
    ids = [dead.enqueue(b"%d" % i) for i in range(2)]
    assert [d.id for d in dead.dequeue(count=2, owner="a")] == ids
    live.beat("b", DEAD_AFTER)
    assert live.dequeue(timeout=0) == []  # leased just now
    time.sleep(DEAD_AFTER + 0.2)
    live.beat("b", DEAD_AFTER)
    assert [d.id for d in live.dequeue(count=5, owner="b")] == ids
    assert dead.beat("a", DEAD_AFTER) is True and dead.held(ids, "a") == []


def test_an_owner_that_keeps_beating_keeps_its_leases(make_broker: MakeBroker) -> None:
    mine, other = make_broker(), make_broker()
    mine.enqueue(b"x")
    # Beats 0.3 s apart outlast a dead_after of 1.5 s, with room for a slow round trip on a busy machine.
    dead_after = 1.5
    mine.beat("a", dead_after)
    (delivery,) = mine.dequeue(owner="a")
    for _ in range(6):
        time.sleep(0.3)
        assert mine.beat("a", dead_after) is False
        other.beat("b", dead_after)
    assert other.dequeue(timeout=0) == []
    assert mine.held([delivery.id], "a") == [delivery.id]


def test_a_silent_owner_with_a_live_status_keeps_its_leases(make_broker: MakeBroker) -> None:
    mine, other = make_broker(), make_broker()
    mine.enqueue(b"x")
    mine.beat("a", DEAD_AFTER)
    (delivery,) = mine.dequeue(owner="a")
    mine.publish_status("a", b"{}", 30)
    time.sleep(DEAD_AFTER + 0.2)
    other.beat("b", DEAD_AFTER)
    assert other.dequeue(timeout=0) == []
    mine.remove_status("a")
    other.beat("b", DEAD_AFTER)
    assert [d.id for d in other.dequeue(owner="b")] == [delivery.id]


def test_a_lease_taken_or_renewed_lately_stays_until_it_is_old(make_broker: MakeBroker) -> None:
    mine, other = make_broker(), make_broker()
    first, second = mine.enqueue(b"1"), mine.enqueue(b"2")
    mine.beat("a", DEAD_AFTER)
    mine.dequeue(owner="a")
    time.sleep(DEAD_AFTER + 0.1)
    mine.dequeue(owner="a")  # its fetcher leased this one just now, though its beats stopped
    other.beat("b", DEAD_AFTER)
    assert [d.id for d in other.dequeue(count=2, owner="b")] == [first]
    assert mine.held([first, second], "a") == [second]
    time.sleep(DEAD_AFTER + 0.1)
    other.beat("b", DEAD_AFTER)
    assert [d.id for d in other.dequeue(count=2, owner="b")] == [second]


def test_a_paused_owner_finds_out_what_it_lost(make_broker: MakeBroker) -> None:
    mine, other = make_broker(), make_broker()
    ids = [mine.enqueue(b"%d" % i) for i in range(2)]
    assert mine.beat("a", DEAD_AFTER) is True  # never beat before: ask held
    taken = [d.id for d in mine.dequeue(count=2, owner="a")]
    assert mine.beat("a", DEAD_AFTER) is False
    time.sleep(DEAD_AFTER + 0.2)
    other.beat("b", DEAD_AFTER)
    (retaken, *_) = other.dequeue(owner="b")
    assert mine.beat("a", DEAD_AFTER) is True
    assert mine.held(taken, "a") == []
    # Renewing and acking what it lost does nothing to the one who holds it now.
    mine.renew(taken)
    assert other.held([retaken.id], "b") == [retaken.id]
    assert [p.state for p in other.pending()].count(QUEUED) == 1
    assert retaken.id == ids[0]


def test_dequeue_without_owner_is_never_released(make_broker: MakeBroker) -> None:
    mine, other = make_broker(), make_broker()
    mine.enqueue(b"x")
    (delivery,) = mine.dequeue()
    other.beat("b", DEAD_AFTER)
    time.sleep(DEAD_AFTER + 0.2)
    other.beat("b", DEAD_AFTER)
    assert other.dequeue(timeout=0) == []
    assert mine.held([delivery.id], "b") == []


def test_acked_deliveries_forget_their_owner(make_broker: MakeBroker) -> None:
    mine = make_broker()
    mine.enqueue(b"x")
    (delivery,) = mine.dequeue(owner="a")
    mine.ack([delivery.id])
    assert mine.held([delivery.id], "a") == []
