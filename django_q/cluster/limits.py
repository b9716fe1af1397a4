"""Rate limits in the fetcher: which deliveries of a dequeued batch may start now.

Q_CLUSTER['rate_limits'] (django_q.rates) names functions and groups. After
each dequeue the fetcher hands the batch to `Limiter.admit`: the packages
whose signature holds are read for their function and group, every start
that a limit covers is asked of the broker in one `take_starts` call, and
those over a limit go back to the broker with `defer`, due when their keys
have room again, their attempt taken back. So a task held back never
occupies the buffer or a worker, other functions keep flowing, and nothing
is dropped. With no rate_limits the batch passes untouched: no unpacking,
no broker call.

Deferred starts of one key are spread, the k-th of a batch due k * window /
count seconds after the first, so that they do not all come back at once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress

from ..brokers.base import Delivery, QueueBackend
from ..conf import Config
from ..exceptions import BrokerError, PackageError
from ..package import unpack, verify
from ..rates import keys_of

logger = logging.getLogger("django_q")


class Limiter:
    """Applies `config.rate_limits` to the fetcher's batches; `admit()` returns what may start now."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.limits = config.rate_limits
        self.deferred = 0  # deliveries handed back to the broker so far

    def admit(self, broker: QueueBackend, batch: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries of `batch` that may start now, in order; the others are deferred in the broker."""
        if not self.limits or not batch:
            return list(batch)
        limited = [(delivery, keys) for delivery in batch if (keys := self._keys(delivery))]
        if not limited:
            return list(batch)
        try:
            waits = broker.take_starts([keys for _, keys in limited], self.limits)
            delays = self._delays(limited, waits)
            if delays:
                broker.defer(delays)
        except BrokerError:
            # Not taken, so not to be run now: back to the queue, or left to lapse if that fails too.
            with suppress(BrokerError):
                broker.requeue([delivery.id for delivery, _ in limited])
            raise
        if delays:
            self.deferred += len(delays)
            logger.debug("rate limits: %s of %s fetched tasks deferred", len(delays), len(batch))
        return [delivery for delivery in batch if delivery.id not in delays]

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

    def _delays(self, limited: list[tuple[Delivery, tuple[str, ...]]], waits: list[float]) -> dict[str, float]:
        """Seconds each start that was not taken waits, spread per set of keys."""
        nth: Counter[tuple[str, ...]] = Counter()
        delays = {}
        for (delivery, keys), wait in zip(limited, waits):
            if wait > 0:
                step = max(self.limits[key].window / self.limits[key].count for key in keys)
                delays[delivery.id] = wait + nth[keys] * step
                nth[keys] += 1
        return delays
