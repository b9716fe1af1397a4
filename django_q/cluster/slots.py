"""What the pusher knows of each connected worker, and how it deals jobs out among them.

A worker is sent its next jobs before it finishes the current one when tasks
are short, so that it never waits on a round trip to the pusher: as many as
run in about PREFETCH_WORK seconds, at most PREFETCH_MAX. Long tasks (and
every task until run times are known) go one at a time: a job queued behind a
long one would wait for it, and a graceful stop would have to as well.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from ..brokers.base import Delivery
from ..context import Progress
from .runstate import RunState, Seen

PREFETCH_WORK = 0.02  # seconds of work queued in a worker, by the mean run time
PREFETCH_MAX = 64


@dataclass(eq=False)  # hashed by identity
class Slot:
    """What the pusher knows of one connected worker."""

    conn: Connection
    pid: int
    index: int
    state: RunState | None = None  # what the worker says it runs, read from its state file
    jobs: deque[Delivery] = field(default_factory=deque)  # sent and not answered, in the order the worker runs them
    answered: int = 0  # outcomes (or rejections, or already-done notes) received on this connection
    running: Delivery | None = None  # the job the worker runs now, as last read from its state
    deadline: float | None = None  # monotonic time after which the worker is killed
    started: float | None = None  # epoch seconds the running job started
    progress: Progress | None = None  # the running job's last progress report, as last read from its state
    killed: bool = False
    # A send to the worker failed: it is leaving (recycled) or dead. It gets no
    # more jobs, but what it sent before it left is still read, up to its EOF.
    closing: bool = False
    cancel_by: float | None = None  # monotonic time after which the cancelled job `cancel_id` is killed
    cancel_id: str | None = None
    # The replacement of a worker about to be recycled, started before it goes
    # (sentinel.Sentinel.spares): it gets no job while a worker of its index is connected.
    standby: bool = False

    @property
    def open(self) -> bool:
        """Whether it may be sent jobs."""
        return not self.killed and not self.closing and not self.standby

    def finish(self) -> Delivery | None:
        """The worker answered for its oldest job: forget it (and its clock, if it was the running one)."""
        self.answered += 1
        delivery = self.jobs.popleft() if self.jobs else None
        if delivery is not None and delivery is self.running:
            self.running = self.started = self.deadline = self.progress = None
        if delivery is not None and delivery.id == self.cancel_id:
            self.cancel_by = self.cancel_id = None
        return delivery

    def taken(self, seen: Seen | None) -> list[Delivery]:
        """Of the jobs it did not answer for, those its state says it took (all of them, without a state)."""
        count = len(self.jobs) if seen is None else max(0, min(len(self.jobs), seen.taken - self.answered))
        return list(self.jobs)[:count]


def depth(mean_run: float | None) -> int:
    """Jobs a worker may hold: one, or for short tasks (by the mean run time, seconds) as many as run in
    PREFETCH_WORK."""
    if mean_run is None:
        return 1
    return max(1, min(PREFETCH_MAX, int(PREFETCH_WORK / max(mean_run, 1e-6))))


def deal(slots: list[Slot], most: int, take: Callable[[], Delivery | None]) -> dict[Slot, list[Delivery]]:
    """Deal jobs from `take()` (None: no more) to the open slots: one to each, then a second, up to `most`.

    A worker is topped up only once it is down to half of `most`, so that
    short tasks go out several to a message rather than one per finished job.
    Each delivery dealt is appended to its slot's jobs.
    """
    open_slots = [s for s in slots if s.open and len(s.jobs) <= most // 2]
    outgoing: dict[Slot, list[Delivery]] = {}
    for wanted in range(1, most + 1):
        for slot in [s for s in open_slots if len(s.jobs) < wanted]:
            delivery = take()
            if delivery is None:
                return outgoing
            slot.jobs.append(delivery)
            outgoing.setdefault(slot, []).append(delivery)
    return outgoing
