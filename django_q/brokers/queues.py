"""Several queues as one broker: what a cluster serving `Q_CLUSTER["queues"]` dequeues from and acks to.

`Queues(brokers)` keeps the broker contract over one broker per queue, in the
order the cluster serves them, so the rest of the cluster stays single-broker:

- `dequeue(count)` leases what is ready in the first queue, then the rest of
  `count` from the next, and so on: a ready package of an earlier queue is
  always handed out before any of a later one; priorities and delays hold
  within each queue. With nothing ready anywhere it waits on every queue at
  once (the store's `watch`), so an enqueue to any of them wakes it.
- A delivery id names its queue: `"high:17"` is delivery `17` of queue
  `high` (queue names hold no ':'). So renew, ack, requeue, retry,
  mark_running and cancel_requests route by id alone, whichever `Queues`
  instance makes the call (the fetcher, the lease thread and the pusher's
  loop each have their own).
- `size` and `leased` sum the queues (`sizes` tells them apart); `lookup`
  and `cancel` find a key in the first queue that has it; a cluster status is
  published to every queue, so each queue's `qinfo` sees the cluster.

A cluster with one queue uses that queue's broker itself (`cluster_broker`):
no prefix, no extra round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from ..exceptions import ConfigurationError
from ..rates import Limit
from .base import Cancelled, Delivery, Pending, QueueBackend, ReadyWatch, Throttle

SEP = ":"
T = TypeVar("T")


def delivery_id(queue: str, sub_id: str) -> str:
    """The id of delivery `sub_id` of `queue` among several queues."""
    return f"{queue}{SEP}{sub_id}"


def split_id(some_id: str) -> tuple[str | None, str]:
    """(queue, id within it) of a delivery id of `Queues`; (None, id) for one of a single queue's broker."""
    queue, sep, rest = some_id.partition(SEP)
    return (queue, rest) if sep else (None, some_id)


def queue_of(some_id: str, default: str) -> str:
    """The queue a delivery came from: the one its id names, else `default` (a single-queue cluster's)."""
    return split_id(some_id)[0] or default


class Queues(QueueBackend):
    """One broker over the brokers of several queues of one store, served in the order given."""

    def __init__(self, brokers: Sequence[QueueBackend]) -> None:
        names = [b.name for b in brokers]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ConfigurationError(f"several queues must be two or more distinct names, got {names!r}")
        super().__init__(brokers[0].name, brokers[0].lease)
        self.brokers = list(brokers)
        self.by_name = {b.name: b for b in self.brokers}
        self.blocking = brokers[0].blocking
        self._watch: ReadyWatch | None = None

    # --- enqueue: to the first queue (the cluster's own enqueues name their queue through get_broker) ---

    def enqueue(self, payload: bytes, priority: int = 0, delay: float = 0.0, key: str | None = None) -> str:
        """Add a package to the first queue."""
        return delivery_id(self.name, self.brokers[0].enqueue(payload, priority, delay, key))

    def enqueue_unique(self, payload: bytes, unique: str, key: str, priority: int = 0, delay: float = 0.0) -> str:
        """Add a package to the first queue unless one holds `unique` there."""
        return self.brokers[0].enqueue_unique(payload, unique, key, priority, delay)

    # --- dequeue, in queue order ---

    def dequeue(self, count: int = 1, timeout: float = 0.0, owner: str | None = None) -> list[Delivery]:
        """Lease up to `count` packages, earlier queues first, waiting up to `timeout` seconds for the first."""
        if count < 1:
            return []
        deadline = time.monotonic() + timeout
        watch = self._watch_all() if timeout > 0 else None
        while True:
            if watch is not None:
                watch.arm()  # before the dequeues: an enqueue racing them still ends the wait
            got = self._take(count, owner)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0 or watch is None:
                return got
            watch.wait(remaining)

    def _take(self, count: int, owner: str | None) -> list[Delivery]:
        got: list[Delivery] = []
        for broker in self.brokers:
            for d in broker.dequeue(count - len(got), owner=owner):
                got.append(Delivery(delivery_id(broker.name, d.id), d.payload, d.attempts))
            if len(got) >= count:
                break
        return got

    def _watch_all(self) -> ReadyWatch:
        if self._watch is None:
            self._watch = self.brokers[0].watch(self.brokers)
        return self._watch

    # --- calls about held deliveries, routed by id ---

    def _route(self, ids: Sequence[str]) -> dict[QueueBackend, list[str]]:
        routed: dict[QueueBackend, list[str]] = {}
        for some_id in ids:
            queue, sub_id = split_id(some_id)
            broker = self.by_name.get(queue or "")
            if broker is not None:  # an id of no queue of ours is leased by nobody here: a no-op
                routed.setdefault(broker, []).append(sub_id)
        return routed

    def renew(self, ids: Sequence[str]) -> None:
        for broker, sub_ids in self._route(ids).items():
            broker.renew(sub_ids)

    def ack(self, ids: Sequence[str]) -> None:
        for broker, sub_ids in self._route(ids).items():
            broker.ack(sub_ids)

    def requeue(self, ids: Sequence[str]) -> None:
        for broker, sub_ids in self._route(ids).items():
            broker.requeue(sub_ids)

    def retry(self, delivery_id: str, payload: bytes, delay: float) -> None:
        for broker, sub_ids in self._route([delivery_id]).items():
            broker.retry(sub_ids[0], payload, delay)

    def defer(self, delays: Mapping[str, float]) -> None:
        routed: dict[QueueBackend, dict[str, float]] = {}
        for some_id, delay in delays.items():
            queue, sub_id = split_id(some_id)
            if queue in self.by_name:
                routed.setdefault(self.by_name[queue], {})[sub_id] = delay
        for broker, sub_delays in routed.items():
            broker.defer(sub_delays)

    # --- rate limits: a start counts in the logs of the queue its task came from ---

    def throttle_for(self, some_id: str) -> Throttle:
        queue, _ = split_id(some_id)
        return self.by_name.get(queue or "", self.brokers[0])

    def take_starts(self, wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]) -> list[float]:
        """Starts counted in the first queue's logs (the limiter asks `throttle_for` each delivery's own)."""
        return self.brokers[0].take_starts(wanted, limits)

    # --- owners: a cluster's beat and what it holds, in every queue ---

    def beat(self, owner: str, dead_after: float) -> bool:
        silent = [broker.beat(owner, dead_after) for broker in self.brokers]  # every queue hears the beat
        return any(silent)

    def held(self, ids: Sequence[str], owner: str) -> list[str]:
        kept: set[str] = set()
        for broker, sub_ids in self._route(ids).items():
            kept.update(delivery_id(broker.name, i) for i in broker.held(sub_ids, owner))
        return [i for i in ids if i in kept]

    def mark_running(self, running: dict[str, bytes]) -> None:
        routed: dict[QueueBackend, dict[str, bytes]] = {}
        for some_id, record in running.items():
            queue, sub_id = split_id(some_id)
            if queue in self.by_name:
                routed.setdefault(self.by_name[queue], {})[sub_id] = record
        for broker, records in routed.items():
            broker.mark_running(records)

    def cancel_requests(self, ids: Sequence[str]) -> list[str]:
        wanted = []
        for broker, sub_ids in self._route(ids).items():
            wanted += [delivery_id(broker.name, i) for i in broker.cancel_requests(sub_ids)]
        return wanted

    # --- what is in the queues ---

    def size(self) -> int:
        return sum(self.sizes().values())

    def sizes(self) -> dict[str, int]:
        """Packages waiting in each queue, by queue name, in queue order."""
        return {b.name: b.size() for b in self.brokers}

    def leased(self) -> int:
        return sum(b.leased() for b in self.brokers)

    def lookup(self, key: str) -> Pending | None:
        def one(broker: QueueBackend) -> Pending | None:
            found = broker.lookup(key)
            return None if found is None else _renamed(broker.name, found)

        return self._first(one)

    def pending(self, limit: int = 100) -> list[Pending]:
        """Up to `limit` packages, queue after queue (each in the order of `Tracking.pending`)."""
        out: list[Pending] = []
        for broker in self.brokers:
            if len(out) >= limit:
                break
            out += [_renamed(broker.name, p) for p in broker.pending(limit - len(out))]
        return out

    def cancel(self, key: str) -> Cancelled | None:
        def one(broker: QueueBackend) -> Cancelled | None:
            done = broker.cancel(key)
            return None if done is None else Cancelled(done.outcome, _renamed(broker.name, done.pending))

        return self._first(one)

    def _first(self, call: Callable[[QueueBackend], T | None]) -> T | None:
        for broker in self.brokers:
            found = call(broker)
            if found is not None:
                return found
        return None

    # --- the store ---

    def ping(self) -> None:
        self.brokers[0].ping()

    def purge(self) -> None:
        for broker in self.brokers:
            broker.purge()

    def setup_warnings(self) -> list[str]:
        return self.brokers[0].setup_warnings()

    def publish_status(self, cluster_id: str, data: bytes, ttl: float) -> None:
        for broker in self.brokers:
            broker.publish_status(cluster_id, data, ttl)

    def remove_status(self, cluster_id: str) -> None:
        for broker in self.brokers:
            broker.remove_status(cluster_id)

    def statuses(self) -> list[bytes]:
        """The statuses of the clusters of any of the queues, each once."""
        return list(dict.fromkeys(data for broker in self.brokers for data in broker.statuses()))

    def write_history(self, minute: int, writer: str, data: bytes) -> None:
        """The first queue's history (the saver writes its cluster's through get_broker, not through this)."""
        self.brokers[0].write_history(minute, writer, data)

    def read_history(self, since: int) -> list[tuple[int, bytes]]:
        return self.brokers[0].read_history(since)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        for broker in self.brokers:
            broker.close()


def _renamed(queue: str, pending: Pending) -> Pending:
    """`pending` with the id Queues gives it."""
    return Pending(delivery_id(queue, pending.id), pending.state, pending.payload, pending.attempts, pending.due,
                   pending.running)
