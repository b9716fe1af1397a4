"""django_q.brokers.wakeup.DataVersionWatch, stepped on a clock of its own: no sleeps, no database."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from django_q.brokers import wakeup


class Clock:
    """time.monotonic and time.sleep for wakeup: sleeping moves the clock on."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class OneWrite:
    """inotify.FolderWrites with one write reported at once; later waits run out their time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.written = True
        self.pid = os.getpid()

    def wait(self, seconds: float) -> bool:
        if self.written:
            self.written = False
            return True
        self.clock.sleep(seconds)
        return False


class Conn:
    connection = object()


def wait(monkeypatch: pytest.MonkeyPatch, clock: Clock, data_version: Callable[[Any], int | None],
         files: Any = None, reconnect: bool = False) -> None:
    """Arm a watch on a stand-in connection, with `files` for inotify's watch (None: none could be made),
    and wait up to 30 s on `clock`; with `reconnect`, Django reconnects between the two."""
    monkeypatch.setattr(wakeup, "time", clock)
    monkeypatch.setattr(wakeup, "_data_version", data_version)
    watch = wakeup.DataVersionWatch()
    watch._files, watch._watched = files, True
    conn = Conn()
    watch.arm(conn)  # type: ignore[arg-type]
    if reconnect:
        conn.connection = object()  # type: ignore[misc]
    watch.wait(conn, 30.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("publish_after", [0.0005, 0.05, 2.0])
def test_a_commit_published_long_after_its_write_still_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch, publish_after: float
) -> None:
    """inotify reports a commit's write before its fsync; data_version changes only once the commit is
    published, which under load can come long after. The wait reads the counter until it changes, however
    late (up to its own end), rather than going back to inotify, which reports nothing more."""
    clock = Clock()

    def data_version(raw: Any) -> int:
        return 2 if clock.now >= publish_after else 1

    wait(monkeypatch, clock, data_version, OneWrite(clock))
    assert publish_after <= clock.now < 30.0
    assert clock.now <= publish_after + (wakeup.SQLITE_SETTLE if publish_after < wakeup.SQLITE_CHECK
                                         else wakeup.SQLITE_CHECK) + 1e-9


class Writes:
    """inotify.FolderWrites reporting a write at each of `times` (clock seconds), as soon as it comes."""

    def __init__(self, clock: Clock, times: list[float]) -> None:
        self.clock = clock
        self.times = times
        self.pid = os.getpid()

    def wait(self, seconds: float) -> bool:
        due = [t for t in self.times if t >= self.clock.now]
        if due and due[0] <= self.clock.now + seconds:
            self.clock.now = due[0]
            self.times.remove(due[0])
            return True
        self.clock.sleep(seconds)
        return False


def test_a_write_that_is_never_published_does_not_slow_the_wake_of_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection's own claim writes the file and never moves its counter; another connection's commit
    written 15 ms later is seen within SQLITE_SETTLE of its publication, not at the next SQLITE_CHECK."""
    clock = Clock()
    published = 0.0153

    def data_version(raw: Any) -> int:
        return 2 if clock.now >= published else 1

    wait(monkeypatch, clock, data_version, Writes(clock, [0.0, 0.015]))
    assert published <= clock.now <= published + wakeup.SQLITE_SETTLE + 1e-9


@pytest.mark.parametrize("published", [0.0, 0.0042, 0.5])
def test_without_inotify_the_wait_reads_the_counter_every_check(
    monkeypatch: pytest.MonkeyPatch, published: float
) -> None:
    """A file inotify cannot watch (a `file:` URI name): the counter is read every SQLITE_CHECK, so a commit
    ends the wait at the first read after it, and none waits out the whole wait."""
    clock = Clock()
    reads: list[float] = []

    def data_version(raw: Any) -> int:
        reads.append(clock.now)
        return 2 if clock.now > published else 1

    wait(monkeypatch, clock, data_version)
    assert published < clock.now <= published + wakeup.SQLITE_CHECK + 1e-9
    assert reads[1:] == pytest.approx([wakeup.SQLITE_CHECK * i for i in range(1, len(reads))])


def test_a_reconnect_ends_the_wait_so_the_watch_is_armed_on_the_new_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another raw connection has a counter of its own: the wait returns at its next read, whatever the counter."""
    clock = Clock()
    wait(monkeypatch, clock, lambda raw: 1, reconnect=True)
    assert clock.now == pytest.approx(wakeup.SQLITE_CHECK)
