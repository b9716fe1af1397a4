"""The history part of the Tracking contract (write_history, read_history), on every broker."""

from __future__ import annotations

import time

from django_q.brokers.base import HISTORY_MINUTES

from .conftest import MakeBroker


def now_minute() -> int:
    return int(time.time() // 60)


def test_each_writer_keeps_its_own_record_of_a_minute(make_broker: MakeBroker) -> None:
    one, two = make_broker(), make_broker()  # two clusters' savers on one queue
    minute = now_minute()
    one.write_history(minute, "a", b"first")
    two.write_history(minute, "b", b"\x00other")
    one.write_history(minute, "a", b"replaced")
    one.write_history(minute - 1, "a", b"earlier")
    assert sorted(one.read_history(minute - 5)) == [(minute - 1, b"earlier"), (minute, b"\x00other"),
                                                     (minute, b"replaced")]
    assert sorted(two.read_history(minute)) == [(minute, b"\x00other"), (minute, b"replaced")]


def test_queues_do_not_share_history(make_broker: MakeBroker, queue_name: str) -> None:
    make_broker().write_history(now_minute(), "a", b"mine")
    assert make_broker(name=f"{queue_name}-other").read_history(0) == []


def test_history_is_kept_an_hour(make_broker: MakeBroker) -> None:
    broker = make_broker()
    minute = now_minute()
    broker.write_history(minute - HISTORY_MINUTES - 5, "a", b"too old")
    broker.write_history(minute - HISTORY_MINUTES + 2, "a", b"kept")
    broker.write_history(minute, "a", b"now")
    assert sorted(broker.read_history(0)) == [(minute - HISTORY_MINUTES + 2, b"kept"), (minute, b"now")]
