"""Rate limits in the fetcher: which deliveries of a dequeued batch may start now.

Q_CLUSTER['rate_limits'] (django_q.rates) names functions and groups. After
each dequeue the fetcher hands the batch to `Limiter.admit`: the packages
whose signature holds are read for their function and group, and every start
that a limit covers is asked of the broker, all in one `take_starts` call.
Those over a limit go back to the broker with `defer`, due when their keys
have room again, their attempt taken back. So a task held back never
occupies the buffer or a worker, other functions keep flowing, and nothing
is dropped. With no rate_limits the batch passes untouched: no unpacking,
no broker call.

A start is counted when it is taken, so it must begin at once, not after a
wait in the buffer or behind other jobs: the broker is asked only for as many
as there are workers free to take a job now (`free()`, from the pusher), and
those taken go to the front of the buffer. The others are deferred for BUSY
seconds without being counted. The time between taking a start and its
worker running it (a few milliseconds) is covered by the margin of the
window (django_q.rates): each delivery taken carries a `start_by`, half that
margin after the moment before it was taken, and a worker that gets it later
(the machine stalled) does not run it but answers `Late`, and it goes back
to the broker. So two starts of a limit are never closer in time than the
log counted them, by more than the margin.

Deferred starts of one set of keys are spread one `window / count` apart
(BUSY_STEP at most for those that only found no free worker) from the last
one this cluster deferred, so that they come back at about the pace they can
start instead of all at once, and a long backlog is not fetched round and
round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from ..brokers.base import Delivery, QueueBackend, Throttle
from ..conf import Config
from ..exceptions import BrokerError, PackageError
from ..package import unpack, verify
from ..rates import keys_of

logger = logging.getLogger("django_q")

BUSY = 0.2  # seconds a limited delivery waits in the broker when no worker is free for it
BUSY_STEP = 0.05  # seconds between the due times of such deliveries, at most

Limited = list[tuple[Delivery, tuple[str, ...]]]


class Limiter:
    """Applies `config.rate_limits` to the fetcher's batches. `free()` counts the workers free for a job
    now; `clock` gives the monotonic seconds of the spread."""

    def __init__(
        self, config: Config, free: Callable[[], int] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.limits = config.rate_limits
        self.free = free
        self.clock = clock
        self.admitted: set[str] = set()  # ids taken and put in the buffer, until the pusher takes them out
        self.horizon: dict[tuple[str, ...], float] = {}  # keys -> when the last one deferred is due
        self.deferred = 0  # deliveries handed back to the broker so far

    def admit(
        self, broker: QueueBackend, batch: Sequence[Delivery], buffer: Iterable[Delivery] = ()
    ) -> tuple[list[Delivery], list[Delivery]]:
        """The deliveries of `batch` that may start now: (those under a limit, the others), each in order.

        The first go to the front of the buffer; the rest of `batch` is deferred in the broker.
        """
        if not self.limits or not batch:
            return [], list(batch)
        limited = [(delivery, keys) for delivery in batch if (keys := self._keys(delivery))]
        if not limited:
            return [], list(batch)
        self.admitted &= {d.id for d in buffer}
        room = len(limited) if self.free is None else max(0, self.free() - len(self.admitted))
        asked, busy = limited[:room], limited[room:]
        before = time.time()
        try:
            waits = self._take(broker, asked)
            delays = self._delays(asked, waits) | self._delays(busy, [BUSY] * len(busy), BUSY_STEP)
            if delays:
                broker.defer(delays)
        except BrokerError:
            # Not taken, so not to be run now: back to the queue, or left to lapse if that fails too.
            try:
                broker.requeue([delivery.id for delivery, _ in limited])
            except BrokerError:
                pass
            raise
        if delays:
            self.deferred += len(delays)
            logger.debug("rate limits: %s of %s fetched tasks deferred", len(delays), len(batch))
        first = [
            replace(delivery, start_by=before + min(self.limits[k].window - self.limits[k].period for k in keys) / 2)
            for delivery, keys in asked if delivery.id not in delays
        ]
        self.admitted.update(d.id for d in first)
        taken = {d.id for d, _ in limited}
        return first, [delivery for delivery in batch if delivery.id not in taken]

    def _take(self, broker: QueueBackend, asked: Limited) -> list[float]:
        """take_starts for `asked`, in one call per store of logs (a cluster serving several queues counts
        each start in its own queue's logs)."""
        by_throttle: dict[Throttle, list[int]] = {}
        for i, (delivery, _) in enumerate(asked):
            by_throttle.setdefault(broker.throttle_for(delivery.id), []).append(i)
        waits = [0.0] * len(asked)
        for throttle, indexes in by_throttle.items():
            for i, wait in zip(indexes, throttle.take_starts([asked[i][1] for i in indexes], self.limits)):
                waits[i] = wait
        return waits

    def _keys(self, delivery: Delivery) -> tuple[str, ...]:
        """The rate limit keys of a delivery; none for one the pusher will not run (it sets it aside)."""
        limit = self.config.max_attempts
        if limit and delivery.attempts > limit:
            return ()
        try:
            verify(delivery.payload, self.config.package_limit)  # before anything is unpickled
            task = unpack(delivery.payload, self.config.package_limit, verified=True)
        except PackageError:
            return ()
        return keys_of(task.func_name, task.group, self.limits)

    def _delays(self, limited: Limited, waits: list[float], most: float | None = None) -> dict[str, float]:
        """Seconds each start that was not taken waits: at least its wait, and a step (window / count, or
        `most` if less) after the last one deferred under the same keys."""
        now = self.clock()
        delays = {}
        for (delivery, keys), wait in zip(limited, waits):
            if wait > 0:
                step = max(self.limits[key].window / self.limits[key].count for key in keys)
                step = step if most is None else min(step, most)
                due = max(now + wait, self.horizon.get(keys, 0.0) + step)
                self.horizon[keys] = due
                delays[delivery.id] = due - now
        return delays
