"""The pusher's lease keeper: one thread, with a broker of its own, for every broker call about held deliveries.

It acks saved deliveries as they come, renews every held lease three times
per `retry`, tells the broker where jobs run once they have run START_NOTICE
seconds, hands failed attempts back under their retry policy, and asks every
CANCEL_POLL seconds which held deliveries cancel() wants stopped.

Every BEAT seconds it beats (`Broker.beat`): the broker records this cluster
alive and, in the same step, releases the leases of any cluster of the queue
silent for DEAD_AFTER seconds, so a dead host's tasks run elsewhere within
about DEAD_AFTER + BEAT seconds rather than after `retry`. The beat comes from
this thread, the one that renews the leases, not from the status thread: a
cluster whose leases are being kept is one whose lease thread runs. A beat
that finds this cluster had itself been silent that long (paused, or cut off
from the broker) asks which deliveries it still holds; the others are `lost`:
never acked, renewed or retried here, and the pusher drops their results.
`in_touch` tells the pusher whether a result may go to be saved: only within
IN_TOUCH seconds of a beat that confirmed every held lease.

A thread of its own, so that the pusher's loop never waits on a broker round
trip, and a loop busy with slow saves or a broker outage does not let
leases lapse under tasks that are still running. The loop hands it work with
`ack_later`, `started` and `retry_later`, and takes cancel requests with
`take_cancels`; everything shared is guarded by one lock. The thread's
decisions are one method, `step(broker, now)`, which a test calls instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from ..backoff import Outage
from ..brokers import cluster_broker
from ..brokers.base import QueueBackend, RunningInfo
from ..brokers.queues import queue_of
from ..conf import Config
from ..exceptions import BrokerError
from ..names import worker_id

logger = logging.getLogger("django_q")

CANCEL_POLL = 1.0  # seconds between asking the broker which held deliveries cancel() wants stopped
# Seconds after a job starts before the broker is told where it runs: a job
# that is over by then costs the broker nothing.
START_NOTICE = 0.1
BEAT = 1.0  # seconds between two beats of a cluster
# Seconds of silence after which a cluster is dead and its leases go: six beats
# missed, and the status (django_q.status.TTL) lapsed as well.
DEAD_AFTER = 6.0
# Seconds after a confirming beat during which results go to be saved: well
# inside DEAD_AFTER, so no other cluster can have taken their deliveries yet.
IN_TOUCH = DEAD_AFTER / 2


class Leases:
    """Broker calls for the pusher's held deliveries, made by a thread; `start()`, then `close()`.

    `holding` lists the deliveries the pusher's loop holds (fetched, sent to a
    worker, or waiting to be saved), `running` the ids running now, and
    `woken` wakes the loop when cancel requests came. `clock` gives the
    monotonic seconds that `step()`'s `now` is counted in.
    """

    def __init__(
        self,
        config: Config,
        holding: Callable[[], list[str]],
        running: Callable[[], set[str]],
        woken: Callable[[], None],
        identity_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.holding = holding
        self.running = running
        self.woken = woken
        self.identity_id = identity_id
        self.clock = clock
        self.lock = threading.Lock()
        self.wanted = threading.Event()  # set when there is something to do before the next tick
        self.closed = threading.Event()
        self.unacked: set[str] = set()  # saved, but the ack has not reached the broker yet
        # delivery id -> (worker pid, epoch started, clock time started)
        self.starts: dict[str, tuple[int, float, float]] = {}
        # delivery id -> (package to run again, delay), or (None, 0.0) to hand back unrun (defer_later)
        self.retries: dict[str, tuple[bytes | None, float]] = {}
        self.cancels: set[str] = set()  # cancel requests not yet taken by the loop
        self.reported: set[str] = set()  # cancel requests handed to the loop already
        self.lost: set[str] = set()  # released while this cluster was silent; not yet taken by the loop
        self.touched: float | None = None  # clock time of the last beat that confirmed every held lease
        self.unconfirmed = False  # a beat found this cluster had been silent; `held` has not answered yet
        self.next_beat = clock()
        self.period = config.retry / 3  # seconds between renewals
        self.next_renewal = clock() + self.period
        self.next_cancel_poll = clock() + CANCEL_POLL
        self.outage = Outage(logger, "acks and lease renewals failing, retrying: %s",
                             "acks and renewals go through again after %.1fs", first=1.0, most=1.0,
                             level=logging.WARNING, clock=clock)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Make the broker calls from a thread of their own, with a broker of its own."""
        self.thread = threading.Thread(target=self._run, name="django_q-leases", daemon=True)
        self.thread.start()

    # --- from the pusher's loop ---

    def ack_later(self, ids: Iterable[str]) -> None:
        """Saved deliveries: acked in batches off the loop."""
        with self.lock:
            self.unacked.update(ids)
        self.wanted.set()

    def started(self, delivery_id: str, pid: int, at: float, at_clock: float) -> None:
        """A job started in worker `pid` at epoch `at` (`at_clock` by the clock): marked running if it still
        runs START_NOTICE later."""
        with self.lock:
            first = not self.starts
            self.starts[delivery_id] = (pid, at, at_clock)
        if first:
            self.wanted.set()  # the thread sets its clock for START_NOTICE

    def retry_later(self, delivery_id: str, payload: bytes, delay: float) -> None:
        """A failed attempt its retry policy runs again: handed back to the broker, due in `delay` seconds."""
        with self.lock:
            self.retries[delivery_id] = (payload, delay)
        self.wanted.set()

    def defer_later(self, delivery_id: str) -> None:
        """A job that did not run (it came late, cluster.limits): handed back ready, its attempt taken back."""
        with self.lock:
            self.retries[delivery_id] = (None, 0.0)
        self.wanted.set()

    def take_cancels(self) -> set[str]:
        """The cancel requests that came since the last call."""
        with self.lock:
            cancels, self.cancels = self.cancels, set()
        return cancels

    def take_lost(self) -> set[str]:
        """The deliveries found released to other clusters since the last call."""
        with self.lock:
            lost, self.lost = self.lost, set()
        return lost

    def in_touch(self, now: float) -> bool:
        """Whether clock time `now` is within IN_TOUCH of a beat that confirmed every held lease."""
        touched = self.touched
        return touched is not None and now - touched < IN_TOUCH

    @property
    def retrying(self) -> bool:
        return bool(self.retries)

    def held(self) -> list[str]:
        """Every delivery this cluster holds. list() copies what other threads change in one step."""
        return [*self.holding(), *list(self.unacked), *list(self.retries)]

    def close(self, broker: QueueBackend) -> None:
        """Stop the thread, then make with `broker` the calls it had no time for."""
        self.closed.set()
        self.wanted.set()
        if self.thread is not None:
            self.thread.join(5.0)
        try:
            self._flush(broker, self.clock(), everything=True)
            self._ack(broker)
        except BrokerError as exc:
            logger.error("could not ack %s saved deliveries; they will be acked on redelivery: %s", len(self.unacked), exc)

    # --- the thread ---

    def step(self, broker: QueueBackend, now: float) -> None:
        """One round as of clock time `now`: mark running what started START_NOTICE ago, hand back
        retries, ack what is saved, and beat, renew every held lease and poll cancel requests when due."""
        if now >= self.next_beat:
            self._beat(broker, now)
            self.next_beat = now + BEAT
        self._flush(broker, now)
        self._ack(broker)
        if now >= self.next_renewal:
            held = self.held()
            if held:
                broker.renew(held)
            self.next_renewal = now + self.period
        if now >= self.next_cancel_poll:
            self._poll_cancels(broker)
            self.next_cancel_poll = now + CANCEL_POLL

    def _run(self) -> None:
        broker = cluster_broker(self.config)
        while not self.closed.is_set():
            now = self.clock()
            wake_at = min(self.next_renewal, self.next_cancel_poll, self.next_beat)
            if self.starts:
                wake_at = min(wake_at, now + START_NOTICE)
            wait = max(0.0, wake_at - now)
            self.wanted.wait(min(wait, self.outage.most) if self.outage.ongoing else wait)
            self.wanted.clear()
            try:
                self.step(broker, self.clock())
            except BrokerError as exc:
                self.closed.wait(self.outage.failed(exc))
                continue
            except Exception:  # this thread must outlive any surprise, or leases lapse
                logger.exception("lease thread error")
                self.closed.wait(1.0)
                continue
            self.outage.recovered()
        broker.close()

    def _beat(self, broker: QueueBackend, now: float) -> None:
        """Beat; if this cluster had been silent past DEAD_AFTER, find out which held deliveries went elsewhere."""
        if broker.beat(self.identity_id, DEAD_AFTER):
            self.unconfirmed = True  # until `held` answers: a failed call is asked again at the next beat
        if self.unconfirmed:
            held = self.held()
            kept = set(broker.held(held, self.identity_id)) if held else set()
            lost = set(held) - kept
            if lost:
                logger.warning(
                    "this cluster was silent for over %ss (paused, or cut off from the broker): %s deliveries it held "
                    "went to other clusters; their results here are dropped", DEAD_AFTER, len(lost))
                with self.lock:
                    self.lost |= lost
                    self.unacked -= lost
                    for delivery_id in lost:
                        self.retries.pop(delivery_id, None)
                        self.starts.pop(delivery_id, None)
                self.woken()
            self.unconfirmed = False
        self.touched = now

    def _ack(self, broker: QueueBackend) -> None:
        with self.lock:
            ids = list(self.unacked)
        if ids:
            broker.ack(ids)
            with self.lock:
                self.unacked.difference_update(ids)

    def _flush(self, broker: QueueBackend, now: float, everything: bool = False) -> None:
        """Tell the broker where jobs run that started START_NOTICE ago, and hand back failed attempts to retry."""
        running = self.running()
        with self.lock:
            due = {k: v for k, v in self.starts.items() if everything or now - v[2] >= START_NOTICE}
            self.starts = {k: v for k, v in self.starts.items() if k not in due and k in running}
            retries = dict(self.retries)
        starts = {k: v for k, v in due.items() if k in running}
        records = {
            k: RunningInfo(queue_of(k, self.config.name), self.identity_id, worker_id(pid), at).encode()
            for k, (pid, at, _) in starts.items()
        }
        try:
            broker.mark_running(records)
        except BrokerError:
            with self.lock:
                self.starts = {**starts, **self.starts}
            raise
        for delivery_id, (payload, delay) in retries.items():
            if payload is None:
                broker.defer({delivery_id: delay})
            else:
                broker.retry(delivery_id, payload, delay)
            with self.lock:
                del self.retries[delivery_id]

    def _poll_cancels(self, broker: QueueBackend) -> None:
        held = self.held()
        wanted = set(broker.cancel_requests(held)) if held else set()
        new = wanted - self.reported
        self.reported = (self.reported & wanted) | new  # requests of deliveries no longer held are forgotten
        if new:
            with self.lock:
                self.cancels |= new
            self.woken()
