"""The pusher's counters of what its cluster did (`Tally`), and the snapshot of them it publishes (`Counters`).

Apart from django_q.status so that the pusher counts from its first task
without importing the status's records and publisher, which it starts only
once its first dequeue has answered (cluster.pusher, KEEPERS_DELAY).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .outcomes import DeadLetterNote

#: upper bounds (seconds) of the task duration histogram; the last bucket is +Inf
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True, slots=True)
class Counters:
    """What the cluster did since its pusher started."""

    enqueued: int = 0  # tasks received for their first delivery
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0  # deliveries after the first: lapsed leases, requeues, failures run again
    dead_lettered: int = 0
    duration_buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative
    duration_sum: float = 0.0  # seconds
    # With metrics_functions only: func -> [succeeded, failed, duration sum (s), *duration buckets]
    functions: dict[str, list] = field(default_factory=dict)


class Tally:
    """The pusher's counters. Written by the pusher's loop only; the publisher reads `counters`, a snapshot.

    Plain integers per event (this runs once or more per task); the frozen
    Counters is built only when the status is published.
    """

    def __init__(self, per_function: bool = False) -> None:
        self.per_function = per_function
        self.functions: dict[str, list] = {}
        self.enqueued = self.started_count = self.succeeded = self.failed = self.retried = self.dead_lettered = 0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0

    @property
    def counters(self) -> Counters:
        return Counters(
            enqueued=self.enqueued,
            started=self.started_count,
            succeeded=self.succeeded,
            failed=self.failed,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            duration_buckets=tuple(self.buckets),
            duration_sum=self.duration_sum,
            functions={func: list(counts) for func, counts in list(self.functions.items())},
        )

    def received(self, attempts: int) -> None:
        """A delivery reached the pusher (its `attempts` includes this one)."""
        if attempts <= 1:
            self.enqueued += 1
        else:
            self.retried += 1

    def started(self) -> None:
        self.started_count += 1

    def finished(self, msg: Any) -> None:
        """Count an outcome or a dead letter on its way to be saved."""
        if isinstance(msg, DeadLetterNote):
            self.dead_lettered += 1
            return
        seconds = max(0.0, msg.stopped - msg.started)
        index = _bucket(seconds)
        self.buckets[index] += 1
        self.duration_sum += seconds
        if msg.success:
            self.succeeded += 1
        else:
            self.failed += 1
        if self.per_function:
            counts = self.functions.get(msg.task.func_name)
            if counts is None:
                counts = self.functions[msg.task.func_name] = [0, 0, 0.0] + [0] * (len(DURATION_BUCKETS) + 1)
            counts[0 if msg.success else 1] += 1
            counts[2] += seconds
            counts[3 + index] += 1


def _bucket(seconds: float) -> int:
    for i, bound in enumerate(DURATION_BUCKETS):
        if seconds <= bound:
            return i
    return len(DURATION_BUCKETS)
