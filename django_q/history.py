"""A queue's recent history: per-minute counts and time histograms, kept in the broker for the dashboard.

Each cluster's saver (a thread of its pusher) sees every outcome its cluster saves. A `HistoryWriter`
adds them up per minute in memory (a few integer additions per outcome, no I/O)
and at most every FLUSH seconds writes the minutes that changed to the broker,
with a sample of the queue's depth: one record per (minute, writer), which that
writer replaces whole each time (`Tracking.write_history`). No two writers share
a record, so several clusters on one queue add up when read, and nothing is
read, changed and written back in the store. The store keeps an hour
(HISTORY_MINUTES), so the history is bounded whatever the load, and it does not
depend on the Task table: pruned results leave no holes.

What a minute holds (`Minute`): runs started in it, and tasks that succeeded,
failed for good, failed to be run again (retried) or were cancelled in it;
waiting times (enqueue to start, first attempts only) and run times as counts
per bucket of BUCKETS (fixed bounds, so histograms of several writers merge by
adding); the same per function; the deepest queue sampled. Percentiles come
from the merged buckets (`quantile`, interpolated within a bucket as
Prometheus's histogram_quantile does), so they are as exact as the buckets.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .brokers import get_broker
from .brokers.base import HISTORY_MINUTES, QueueBackend
from .conf import Config, get_config
from .outcomes import Outcome
from .counters import DURATION_BUCKETS

logger = logging.getLogger("django_q")

BUCKETS = DURATION_BUCKETS  # upper bounds, seconds; one more bucket past the last
FLUSH = 5.0  # seconds between two writes of a saver's history
FUNCS_MAX = 200  # functions told apart per writer per minute; the rest count as OTHER
OTHER = "(other functions)"


def bucket(seconds: float) -> int:
    """The index in BUCKETS of the bucket `seconds` falls in."""
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return i
    return len(BUCKETS)


def _zeros() -> list[int]:
    return [0] * (len(BUCKETS) + 1)


@dataclass(slots=True)
class Minute:
    """What one writer (or, merged, every writer) recorded of one minute of a queue."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    depth: int = -1  # the deepest queue sampled; -1: none sampled
    wait: list[int] = field(default_factory=_zeros)
    run: list[int] = field(default_factory=_zeros)
    funcs: dict[str, list[int]] = field(default_factory=dict)  # func -> [runs, failed runs, *run buckets]

    def to_json(self) -> bytes:
        return json.dumps({name: getattr(self, name) for name in self.__slots__}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Minute:
        """A record as written; keys this version does not know are ignored."""
        raw = json.loads(data)
        return cls(**{name: raw[name] for name in cls.__slots__ if name in raw})

    def merge(self, other: Minute) -> None:
        """Add `other` into this one (the depth is the deeper one's)."""
        self.started += other.started
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        self.cancelled += other.cancelled
        self.depth = max(self.depth, other.depth)
        _add(self.wait, other.wait)
        _add(self.run, other.run)
        for func, counts in other.funcs.items():
            _add(self.funcs.setdefault(func, [0, 0, *_zeros()]), counts)


def _add(into: list[int], more: list[int]) -> None:
    for i, n in enumerate(more[: len(into)]):
        into[i] += n


class HistoryWriter:
    """A saver's minutes not yet written, and when to write them. Not thread-safe: the saver's thread owns it."""

    def __init__(self, broker: QueueBackend, writer: str, clock=time.time) -> None:
        self.broker = broker
        self.writer = writer
        self.clock = clock
        self.minutes: dict[int, Minute] = {}
        self.dirty: set[int] = set()
        self.next_flush = 0.0

    def _minute(self, at: float) -> Minute:
        """The writer's record of the minute `at` falls in (a throwaway one past the hour the store keeps).

        Every minute of the hour is kept, not only the last: a long task's
        start counts in the minute it started, and the record written then
        must hold what was written before, since it replaces it.
        """
        minute = int(at // 60)
        if minute <= int(self.clock() // 60) - HISTORY_MINUTES:
            return Minute()
        self.dirty.add(minute)
        found = self.minutes.get(minute)
        if found is None:
            found = self.minutes[minute] = Minute()
        return found

    def add(self, outcomes: Iterable[Outcome]) -> None:
        """Count finished runs: a start in the minute it started, its end and run time in the minute it stopped."""
        for o in outcomes:
            started = o.started if o.started > 0 else o.stopped
            first = self._minute(started)
            first.started += 1
            if o.attempts <= 1 and o.task.enqueued > 0:
                first.wait[bucket(max(0.0, started - o.task.enqueued))] += 1
            end = self._minute(o.stopped)
            seconds = bucket(max(0.0, o.stopped - started))
            end.run[seconds] += 1
            if o.success:
                end.succeeded += 1
            elif o.cancelled:
                end.cancelled += 1
            elif o.retry_payload is not None or not o.ack:
                end.retried += 1
            else:
                end.failed += 1
            func = o.task.func_name
            counts = end.funcs.get(func)
            if counts is None:
                func = func if len(end.funcs) < FUNCS_MAX else OTHER
                counts = end.funcs.setdefault(func, [0, 0, *_zeros()])
            counts[0] += 1
            counts[1] += not o.success and not o.cancelled
            counts[2 + seconds] += 1

    def flush(self, force: bool = False) -> bool:
        """Write the minutes that changed, with a depth sample, if FLUSH seconds passed (or `force`).

        Returns whether it wrote. A BrokerError propagates and the minutes stay
        to be written next time: each record is the writer's whole minute.
        """
        now = self.clock()
        if not force and now < self.next_flush:
            return False
        self.next_flush = now + FLUSH
        current = self._minute(now)
        current.depth = max(current.depth, self.broker.size())
        for minute in sorted(self.dirty):
            self.broker.write_history(minute, self.writer, self.minutes[minute].to_json())
        self.dirty.clear()
        oldest = int(now // 60) - HISTORY_MINUTES
        self.minutes = {m: v for m, v in self.minutes.items() if m > oldest}
        return True


def quantile(q: float, buckets: list[int]) -> float | None:
    """The q-quantile (0..1) of a histogram over BUCKETS, in seconds; None when it is empty.

    Linear within the bucket it falls in; in the last, unbounded bucket, that
    bucket's lower bound.
    """
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = BUCKETS[i - 1] if i else 0.0
            if i >= len(BUCKETS):
                return lower
            return lower + (BUCKETS[i] - lower) * (rank - seen) / count
        seen += count
    return BUCKETS[-1]


def merged(broker: QueueBackend, since: int) -> dict[int, Minute]:
    """Every writer's records of the broker's queue from minute `since` on, merged per minute."""
    out: dict[int, Minute] = {}
    for minute, data in broker.read_history(since):
        try:
            record = Minute.from_json(data)
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("unreadable history record of queue %s: %s", broker.name, exc)
            continue
        out.setdefault(minute, Minute()).merge(record)
    return out


def window(queue: str, config: Config | None = None, minutes: int = 60, now: float | None = None,
           broker: QueueBackend | None = None) -> dict:
    """The last `minutes` minutes of `queue` (the one under way last), ready for JSON.

    Per minute: tasks started, succeeded and failed per second (the minute
    under way over its seconds so far), the deepest queue sampled, waiting
    time p50 and p95. Per function over the whole window: runs, failed runs,
    failure rate, run time p50 and p95, most runs first.
    """
    minutes = max(1, min(minutes, HISTORY_MINUTES - 1))
    now = time.time() if now is None else now
    last = int(now // 60)
    first = last - minutes + 1
    found = merged(broker or get_broker(queue, config or get_config()), first)
    rows = [found.get(m) or Minute() for m in range(first, last + 1)]
    spans = [60.0] * (len(rows) - 1) + [max(1.0, now - last * 60)]
    funcs: dict[str, list[int]] = {}
    for row in rows:
        for func, counts in row.funcs.items():
            _add(funcs.setdefault(func, [0, 0, *_zeros()]), counts)
    total = Minute()
    for row in rows:
        total.merge(row)
    return {
        "queue": queue,
        "minutes": [m * 60 for m in range(first, last + 1)],
        "started": [round(r.started / s, 3) for r, s in zip(rows, spans)],
        "succeeded": [round(r.succeeded / s, 3) for r, s in zip(rows, spans)],
        "failed": [round(r.failed / s, 3) for r, s in zip(rows, spans)],
        "depth": [r.depth if r.depth >= 0 else None for r in rows],
        "wait_p50": [quantile(0.5, r.wait) for r in rows],
        "wait_p95": [quantile(0.95, r.wait) for r in rows],
        "totals": {"started": total.started, "succeeded": total.succeeded, "failed": total.failed,
                   "retried": total.retried, "cancelled": total.cancelled,
                   "wait_p50": quantile(0.5, total.wait), "wait_p95": quantile(0.95, total.wait)},
        "functions": sorted(
            ({"func": func, "runs": c[0], "failed": c[1], "failure_rate": round(c[1] / c[0], 4) if c[0] else 0.0,
              "p50": quantile(0.5, c[2:]), "p95": quantile(0.95, c[2:])} for func, c in funcs.items()),
            key=lambda f: (-f["runs"], f["func"]),
        ),
    }
