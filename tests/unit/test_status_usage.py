"""What the status publisher measures besides the pusher's snapshot: workers' memory and CPU, tasks per second."""

from __future__ import annotations

import os

from django_q import status
from django_q.conf import Config
from django_q.names import Identity
from django_q.outcomes import Outcome
from django_q.package import TaskPackage
from django_q.status import Publisher, Tally


def publisher() -> Publisher:
    return Publisher(Config(name="usage"), Identity.new("usage"), lambda: ("running", []), Tally())


def test_tasks_per_second_over_the_last_ten_seconds(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(status.time, "monotonic", lambda: clock[0])
    p = publisher()
    assert p._rate(0) == 0.0
    clock[0] += 2
    assert p._rate(10) == 5.0
    clock[0] += 10
    assert p._rate(30) == 2.0  # (30 - 10) over the 10 s since the look at 102
    clock[0] += 10
    assert p._rate(30) == 0.0


def test_memory_and_cpu_of_a_process(monkeypatch):
    p = publisher()
    rss, cpu = p._usage(os.getpid())
    assert rss > 1000 and cpu is None  # KiB; the CPU clock starts at the first look
    sum(range(200_000))
    rss, cpu = p._usage(os.getpid())
    assert rss > 1000 and cpu >= 0.0
    assert p._usage(2**22 + 12345) == (None, None)  # no such process


def test_per_function_counts_only_when_asked():
    done = Outcome("d", TaskPackage(id="t", name="n", func="app.f"), True, None, 10.0, 10.3, 1, "q")
    off, on = Tally(), Tally(per_function=True)
    for tally in (off, on):
        tally.finished(done)
        tally.finished(done._replace(success=False))
    assert off.counters.functions == {}
    counts = on.counters.functions["app.f"]
    assert counts[:2] == [1, 1] and round(counts[2], 6) == 0.6 and sum(counts[3:]) == 2
