"""The pusher's fetch thread: keeps up to `queue_limit` leased deliveries ready for the workers.

It owns its own broker instance (brokers are used by one thread at a time)
and wakes the pusher's loop (channels.Wake) whenever deliveries arrive. One
round is `fetch(broker, count)`, which a test calls instead of the thread.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from ..backoff import Outage
from ..brokers import cluster_broker
from ..brokers.base import Delivery, QueueBackend
from ..conf import Config
from ..exceptions import BrokerError
from .channels import Wake
from .limits import Limiter

logger = logging.getLogger("django_q")

# Seconds one dequeue call may block: a stop waits for the call under way, so
# this bounds how long a graceful stop takes once the running tasks are done.
# An enqueue wakes the call at once either way; an idle cluster makes about
# 1 / WAIT dequeue calls a second.
WAIT = 0.25


class Fetcher(threading.Thread):
    """Fills `buffer` from the broker until `stop()`; the pusher pops from the left. `start()` runs the thread."""

    def __init__(
        self, config: Config, wake: Callable[[Wake], None], free: Callable[[], int] | None = None,
        owner: str | None = None,
    ) -> None:
        super().__init__(name="django_q-fetcher", daemon=True)
        self.config = config
        self.owner = owner  # the cluster id the broker records as holding what this fetcher leases
        self.wake = wake
        self.buffer: deque[Delivery] = deque()
        self.room = threading.Event()  # set by the pusher when it took deliveries out
        self.stopping = threading.Event()
        self.empty_polls = 0  # consecutive dequeues that found nothing (run-once mode reads it)
        # Set by the pusher while tasks are short: what its workers' prefetch
        # takes per round; the buffer may hold that much, or queue_limit if more.
        self.prefetch = 0
        self.limiter = Limiter(config, free)  # `free`: workers free for a job now (the pusher's count)
        self.outage = Outage(logger, "broker unreachable, retrying with backoff: %s", "broker is back after %.1fs",
                             first=0.2)

    def stop(self) -> None:
        self.stopping.set()
        self.room.set()

    def room_left(self) -> int:
        """Deliveries the buffer has room for: `queue_limit`, or the workers' prefetch if more."""
        return max(self.config.queue_limit, self.prefetch) - len(self.buffer)

    def fetch(self, broker: QueueBackend, count: int, wait: float = WAIT) -> None:
        """One round: lease up to `count` deliveries, waiting up to `wait` seconds for the first, and put
        into the buffer those the rate limits let start now (cluster.limits)."""
        got = broker.dequeue(count, wait, owner=self.owner)
        if not got:
            self.empty_polls += 1
            return
        self.empty_polls = 0
        first, rest = self.limiter.admit(broker, got, self.buffer)
        if first or rest:
            self.buffer.extendleft(reversed(first))  # their starts are counted from now
            self.buffer.extend(rest)
            self.wake(Wake.FETCHED)

    def run(self) -> None:
        broker = cluster_broker(self.config)  # every queue the cluster serves, in order
        try:
            while not self.stopping.is_set():
                room = self.room_left()
                if room <= 0:
                    self.room.wait(WAIT)
                    self.room.clear()
                    continue
                try:
                    self.fetch(broker, room)
                except BrokerError as exc:
                    self.stopping.wait(self.outage.failed(exc))
                    continue
                self.outage.recovered()
        finally:
            broker.close()
            self.wake(Wake.FETCHER_EXITED)
