"""The broker contract: signed bytes in, leased deliveries out, then ack.

A broker knows nothing of tasks. It keeps opaque packages in a named queue
and hands them out under a lease:

- `dequeue` leases up to `count` ready packages for `lease` seconds and
  returns them as `Delivery` objects (an empty list when none came within
  `timeout`). Each delivery counts one more attempt.
- `renew` extends the lease of deliveries still being worked on.
- `ack` removes a delivery for good; it is called only after the task's
  result has been saved.
- `requeue` makes a delivery ready again at once, keeping its position and
  attempt count (a graceful stop hands back what it did not start).
- `retry(id, payload, delay)` replaces a leased delivery's package and makes it
  ready again after `delay` seconds, keeping its id and attempt count (a task's
  retry policy).
- `defer({id: delay})` makes leased deliveries ready again after their delays
  and takes back the attempt their dequeue counted: a task held back by a rate
  limit did not run.
- A delivery whose lease runs out (its cluster died) becomes ready again on
  its own and is handed out by the next `dequeue` of any cluster.
- `enqueue_unique(payload, unique, key)` adds the package only if no package
  enqueued with the same `unique` is still in the queue, in one atomic step
  across every producer; otherwise it adds nothing and returns the key of the
  package that holds `unique`. A package holds its `unique` for exactly as
  long as it is in the queue (waiting, delayed, leased or lapsed): ack, cancel
  and purge free it with the package, and nothing else can.

Acking, renewing or requeueing an id that is no longer leased is a no-op, so a
slow cluster whose lease was taken over cannot corrupt the queue.

Owners, so that a dead cluster's deliveries do not wait out their lease:

- `dequeue(..., owner=cluster_id)` records the cluster that leased each delivery.
- `beat(owner, dead_after)` is one atomic step, made every second or so by
  each live cluster: it records that `owner` is alive now, and makes ready
  again at once the leased deliveries of every owner that has neither beaten
  for `dead_after` seconds nor a status that has not expired (`publish_status`),
  leaving alone any delivery leased or renewed within `dead_after` seconds. It
  returns whether `owner` itself had gone `dead_after` seconds without a beat,
  in which case some of its deliveries may be gone: `held` tells which are left.
- `held(ids, owner)` returns those of `ids` that are still leased by `owner`.

That is all `Broker` asks. What the cluster and `fetch(in_flight=True)` need besides, to see
and steer tasks and clusters, is the `Tracking` contract, and to keep rate
limits across clusters the `Throttle` contract; every broker `get_broker()`
returns does all three (`QueueBackend`).
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from ..exceptions import BatchMismatch, InvalidPriority, TaskTypeError
from ..rates import Limit

PRIORITY_MIN = -100
PRIORITY_MAX = 100
UNIQUE_MAX = 64  # characters of a unique key; django_q.enqueue passes a hex digest
HISTORY_MINUTES = 61  # minutes of history a store keeps (django_q.history): the last hour, and the one under way


@dataclass(frozen=True, slots=True)
class Delivery:
    """A package handed out under a lease."""

    id: str  # the broker's receipt: pass it to ack, renew and requeue
    payload: bytes
    attempts: int  # deliveries of this package so far, this one included
    # Set by the cluster, not the broker (cluster.limits): epoch seconds by which a worker must start it,
    # else it goes back to the broker unrun; 0.0 for no bound.
    start_by: float = 0.0


QUEUED = "queued"
DELAYED = "delayed"
LEASED = "leased"


@dataclass(frozen=True, slots=True)
class Pending:
    """A package still in the broker, as `lookup`, `pending` and `cancel` see it."""

    id: str
    state: str  # QUEUED (ready, or its lease lapsed), DELAYED or LEASED
    payload: bytes
    attempts: int
    due: float | None = None  # epoch seconds: when a delayed package is due, or a lease ends
    running: bytes | None = None  # what mark_running recorded, while LEASED


@dataclass(frozen=True, slots=True)
class RunningInfo:
    """Where and since when a leased task runs; kept in the broker while it runs."""

    cluster: str  # the cluster's name (its queue)
    cluster_id: str  # the running cluster's identity (django_q.names.Identity)
    worker: str  # worker_id() of the worker process
    started: float  # epoch seconds

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> RunningInfo | None:
        if not data:
            return None
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What `cancel` did: REMOVED the waiting package, or REQUESTED that its cluster stop it."""

    outcome: str
    pending: Pending


REMOVED = "removed"
REQUESTED = "requested"


class Broker(abc.ABC):
    """One named queue on some store. Subclasses are safe to use from one thread."""

    #: whether `dequeue` blocks on the server rather than polling
    blocking: bool = False

    def __init__(self, name: str, lease: float) -> None:
        self.name = name
        self.lease = lease

    @abc.abstractmethod
    def enqueue(self, payload: bytes, priority: int = 0, delay: float = 0.0, key: str | None = None) -> str:
        """Add a package; higher `priority` is handed out first; `delay` seconds hold it back."""

    def enqueue_many(
        self, payloads: Sequence[bytes], priority: int = 0, delay: float = 0.0, keys: Sequence[str | None] = ()
    ) -> list[str]:
        """Add several packages in one round trip where the store allows it."""
        check_priority(priority)
        return [self.enqueue(p, priority, delay, k) for p, k in zip(payloads, batch_keys(payloads, keys))]

    @abc.abstractmethod
    def enqueue_unique(self, payload: bytes, unique: str, key: str, priority: int = 0, delay: float = 0.0) -> str:
        """Add a package under `key` unless one enqueued with `unique` is still here; the key of the holder.

        Returns `key` itself when this package was added, else the key of the
        package that holds `unique` (and nothing is added).
        """

    @abc.abstractmethod
    def dequeue(self, count: int = 1, timeout: float = 0.0, owner: str | None = None) -> list[Delivery]:
        """Lease up to `count` ready packages, waiting up to `timeout` seconds for the first; `owner` holds them."""

    @abc.abstractmethod
    def renew(self, ids: Sequence[str]) -> None:
        """Extend the leases of `ids` to `lease` seconds from now."""

    @abc.abstractmethod
    def ack(self, ids: Sequence[str]) -> None:
        """Remove deliveries for good."""

    @abc.abstractmethod
    def requeue(self, ids: Sequence[str]) -> None:
        """Make leased deliveries ready again now, keeping their place and attempts."""

    @abc.abstractmethod
    def retry(self, delivery_id: str, payload: bytes, delay: float) -> None:
        """Replace a leased delivery's package and make it ready `delay` seconds from now."""

    @abc.abstractmethod
    def defer(self, delays: Mapping[str, float]) -> None:
        """Make leased deliveries ready again `delays[id]` seconds from now, their dequeue's attempt taken back."""

    @abc.abstractmethod
    def beat(self, owner: str, dead_after: float) -> bool:
        """Record `owner` alive now and release the leases of owners silent for `dead_after` seconds, atomically.

        True if `owner` itself had not beaten within `dead_after` seconds (or
        never had): its deliveries may have been released, ask `held`.
        """

    @abc.abstractmethod
    def held(self, ids: Sequence[str], owner: str) -> list[str]:
        """Those of `ids` still leased by `owner`, in `ids` order."""

    @abc.abstractmethod
    def size(self) -> int:
        """Packages waiting to be handed out (leased and delayed ones excluded)."""

    @abc.abstractmethod
    def leased(self) -> int:
        """Packages handed out and not yet acked."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Return if the store answers; raise BrokerConnectionError otherwise."""

    @abc.abstractmethod
    def purge(self) -> None:
        """Remove every package of this queue, ready or leased."""

    def setup_warnings(self) -> list[str]:
        """Ways the store's own settings could lose tasks, told once when a cluster starts."""
        return []

    def watch(self, brokers: Sequence[Broker]) -> ReadyWatch:
        """A watch that wakes when any of `brokers` (queues of this broker's store, this one among them)
        may have a ready package: how a cluster serving several queues waits on all of them at once."""
        return ReadyWatch()

    def close(self) -> None:
        """Release connections."""


class ReadyWatch:
    """Waits for any of several queues of one store (brokers.queues.Queues.dequeue); this one just sleeps.

    A waiting dequeue repeats: `arm`, a non-blocking dequeue of each queue,
    and if all were empty, `wait`. A package that arrives after `arm` ends
    the next `wait` early; one that becomes ready on its own (a delay ends, a
    lease lapses) is found once `wait` returns, which a store bounds by its
    poll interval or the next due time it knows of.
    """

    def arm(self) -> None:
        """Note the store's state; called right before the dequeues."""

    def wait(self, seconds: float) -> None:
        """Return after up to `seconds`, or sooner if a package may have arrived since `arm`."""
        time.sleep(seconds)

    def close(self) -> None:
        """Release what the watch holds."""


class Tracking(abc.ABC):
    """What a queue's store keeps besides packages: where each task is, cancel requests, cluster statuses.

    A package may be enqueued under a `key` (the task id), which lets the task
    be seen and steered while it waits or runs:

    - `lookup(key)` tells where it is: queued, delayed, or leased (with what
      `mark_running` recorded once a worker started it).
    - `cancel(key)` removes a package that is not leased and returns it; for a
      leased one it only records the request, which the cluster holding it
      reads with `cancel_requests` and carries out.

    Besides packages, the store keeps one small status record per running
    cluster of the queue (`publish_status`, `remove_status`, `statuses`; see
    django_q.status): opaque bytes that expire unless published again.

    And the queue's recent history (`write_history`, `read_history`; see
    django_q.history): one opaque record per writer (a cluster's saver) per
    minute, each writer replacing only its own, kept HISTORY_MINUTES minutes.
    Writers never share a record, so several clusters add up instead of
    overwriting each other, with no read-modify-write in the store.
    """

    @abc.abstractmethod
    def mark_running(self, running: dict[str, bytes]) -> None:
        """Record, per leased delivery id, which worker of which cluster started it."""

    @abc.abstractmethod
    def lookup(self, key: str) -> Pending | None:
        """The package enqueued under `key`, while it is in the broker."""

    @abc.abstractmethod
    def pending(self, limit: int = 100) -> list[Pending]:
        """Up to `limit` packages of the queue: leased ones, then ready ones in order, then delayed ones."""

    @abc.abstractmethod
    def cancel(self, key: str) -> Cancelled | None:
        """Remove the waiting package enqueued under `key`, or ask its cluster to stop it if leased."""

    @abc.abstractmethod
    def cancel_requests(self, ids: Sequence[str]) -> list[str]:
        """Those of the leased `ids` that `cancel` asked to stop."""

    @abc.abstractmethod
    def publish_status(self, cluster_id: str, data: bytes, ttl: float) -> None:
        """Store (or replace) the status of cluster `cluster_id`; it expires `ttl` seconds from now."""

    @abc.abstractmethod
    def remove_status(self, cluster_id: str) -> None:
        """Remove the status of cluster `cluster_id` now (a graceful stop)."""

    @abc.abstractmethod
    def statuses(self) -> list[bytes]:
        """The statuses of this queue's clusters that have not expired, in no particular order."""

    @abc.abstractmethod
    def write_history(self, minute: int, writer: str, data: bytes) -> None:
        """Store (or replace) `writer`'s record of `minute` (epoch seconds // 60); forget those past HISTORY_MINUTES."""

    @abc.abstractmethod
    def read_history(self, since: int) -> list[tuple[int, bytes]]:
        """Every writer's record of the minutes from `since` on, as (minute, data), in no particular order."""


class Throttle(abc.ABC):
    """Rate limits kept in the queue's store, so that every cluster of the queue counts the same starts.

    `take_starts` keeps, per key, a sliding log of start times (django_q.rates)
    and decides a whole batch in one atomic step across clusters: each start
    is taken, and logged under all its keys, only if every one of its keys had
    fewer than `count` starts in the last `window` seconds of the store's clock.
    """

    @abc.abstractmethod
    def take_starts(self, wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]) -> list[float]:
        """For each start in `wanted` (the keys of `limits` it counts against), in order: 0.0 if it was
        taken, else the seconds until all its keys have room."""

    def throttle_for(self, delivery_id: str) -> Throttle:
        """Whose logs count the start of `delivery_id`: this store's, or (brokers.queues) its queue's."""
        return self


class QueueBackend(Broker, Tracking, Throttle):
    """A broker that also does the tracking and the throttling: what `get_broker()` returns, and what every
    broker here is."""


def visible_state(leased: bool, visible: float, now: float) -> str:
    """The state of a message kept by the time it becomes `visible` (the memory and database brokers):
    LEASED while its lease holds, DELAYED until it is due, QUEUED once visible (ready, or its lease lapsed:
    the next dequeue hands it out)."""
    if visible <= now:
        return QUEUED
    return LEASED if leased else DELAYED


def visible_pending(
    message_id: str, leased: bool, visible: float, now: float, payload: bytes, attempts: int, running: bytes | None
) -> Pending:
    """The Pending of such a message (visible_state): `due` unless QUEUED, `running` only while LEASED."""
    state = visible_state(leased, visible, now)
    if state == QUEUED:
        return Pending(id=message_id, state=state, payload=payload, attempts=attempts)
    return Pending(id=message_id, state=state, payload=payload, attempts=attempts, due=visible,
                   running=running if state == LEASED else None)


def check_priority(priority: int) -> int:
    """`priority` itself if it is a whole number from PRIORITY_MIN to PRIORITY_MAX; InvalidPriority otherwise."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        message = f"priority must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}, got {priority!r}"
        raise InvalidPriority(message)
    return priority


def batch_keys(payloads: Sequence[bytes], keys: Sequence[str | None]) -> list[str | None]:
    """The key of each of `payloads` for enqueue_many: `keys`, or None for each when none are given."""
    if not keys:
        return [None] * len(payloads)
    if len(keys) != len(payloads):
        raise BatchMismatch(f"{len(payloads)} payloads but {len(keys)} keys")
    return list(keys)


def check_unique(unique: str) -> str:
    """`unique` itself if it is a non-empty string of at most UNIQUE_MAX characters; TaskTypeError otherwise."""
    if not isinstance(unique, str) or not 0 < len(unique) <= UNIQUE_MAX:
        raise TaskTypeError(f"a unique key must be a string of 1 to {UNIQUE_MAX} characters, got {unique!r}")
    return unique
