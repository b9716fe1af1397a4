"""The pusher's fetch thread: keeps leased deliveries ready for the workers, `queue_limit` or more.

It owns its own broker instance (brokers are used by one thread at a time).
When deliveries arrive it asks the pusher to deal them out at once (`deal`,
which does so unless the pusher's loop is busy), and otherwise wakes the loop
(channels.Wake): a task sent to an idle worker from this thread does not wait
for the loop's thread to wake and take the GIL. One round is
`fetch(broker, count)`, which a test calls instead of the thread.

The buffer holds the most of `queue_limit`, the workers' prefetch (set by the
pusher while tasks are short) and `ahead`: AHEAD_TRIPS times what the pusher
takes out of the buffer while a dequeue is on its way. A dequeue is sent as
soon as the buffer has room, so one is in flight while the workers drain the
rest; sized so, what is left when it is sent outlasts its round trip, and the
workers never wait on the broker, however far away it is (a round trip of
1.5 ms drains about 5 no-op tasks on 2 workers; queue_limit is 4).
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

AHEAD_MAX = 512  # deliveries `ahead` may keep in the buffer at most
# Round trips' worth of draining `ahead` keeps: what is left when a dequeue is
# sent (`ahead` less what the last one brought back) outlasts its round trip.
AHEAD_TRIPS = 3

# Seconds one dequeue call may block: a stop waits for the call under way, so
# this bounds how long a graceful stop takes once the running tasks are done.
# An enqueue wakes the call at once either way; an idle cluster makes about
# 1 / WAIT dequeue calls a second.
WAIT = 0.25


class Fetcher(threading.Thread):
    """Fills `buffer` from the broker until `stop()`; the pusher pops from the left. `start()` runs the thread."""

    def __init__(
        self, config: Config, wake: Callable[[Wake], None], free: Callable[[], int] | None = None,
        owner: str | None = None, deal: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name="django_q-fetcher", daemon=True)
        self.config = config
        self.owner = owner  # the cluster id the broker records as holding what this fetcher leases
        self.wake = wake
        self.deal = deal  # deals the buffer out now and says True, or says False if the loop is busy
        self.buffer: deque[Delivery] = deque()
        self.room = threading.Event()  # set by the pusher when it took deliveries out
        self.stopping = threading.Event()
        self.empty_polls = 0  # consecutive dequeues that found nothing (run-once mode reads it)
        self.first_round = threading.Event()  # set once the first dequeue answered or failed
        # Set by the pusher while tasks are short: what its workers' prefetch
        # takes per round; the buffer may hold that much, or queue_limit if more.
        self.prefetch = 0
        self.ahead = 0  # deliveries the buffer keeps for the round trip of the next dequeue (see _measure)
        self.limiter = Limiter(config, free)  # `free`: workers free for a job now (the pusher's count)
        self.outage = Outage(logger, "broker unreachable, retrying with backoff: %s", "broker is back after %.1fs",
                             first=0.2)

    def stop(self) -> None:
        self.stopping.set()
        self.room.set()

    def room_left(self) -> int:
        """Deliveries the buffer has room for: `queue_limit`, or the workers' prefetch or `ahead` if more."""
        return max(self.config.queue_limit, self.prefetch, self.ahead) - len(self.buffer)

    def fetch(self, broker: QueueBackend, count: int, wait: float = WAIT) -> None:
        """One round: lease up to `count` deliveries, waiting up to `wait` seconds for the first, and put
        into the buffer those the rate limits let start now (cluster.limits)."""
        before = len(self.buffer)
        got = broker.dequeue(count, wait, owner=self.owner)
        self._measure(before - len(self.buffer), drained=not self.buffer)
        if not got:
            self.empty_polls += 1
            return
        self.empty_polls = 0
        first, rest = self.limiter.admit(broker, got, self.buffer)
        if first or rest:
            self.buffer.extendleft(reversed(first))  # their starts are counted from now
            self.buffer.extend(rest)
            if self.deal is None or not self.deal():
                self.wake(Wake.FETCHED)

    def _measure(self, taken: int, drained: bool) -> None:
        """Size `ahead` by the `taken` deliveries the pusher took out of the buffer during one dequeue.

        A round trip that `drained` the buffer may have found the workers
        wanting more than there was: `ahead` doubles (or grows to AHEAD_TRIPS
        times what was taken, if more), to AHEAD_MAX at most. Otherwise it
        moves halfway to AHEAD_TRIPS times what was taken, so that it settles
        there, and shrinks when tasks grow longer or the queue runs dry (an
        idle dequeue takes nothing).
        """
        if drained and taken > 0:
            self.ahead = min(AHEAD_MAX, max(2 * self.ahead, AHEAD_TRIPS * taken))
        else:
            self.ahead = (self.ahead + AHEAD_TRIPS * max(taken, 0)) // 2

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
                finally:
                    self.first_round.set()
                self.outage.recovered()
        finally:
            broker.close()
            self.wake(Wake.FETCHER_EXITED)
