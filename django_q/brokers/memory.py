# A broker in this process's memory, for tests: it keeps the contract of the
# Redis and database brokers (the contract suite runs on it too) with no server,
# and its `clock` lets a test lapse a lease or a delay without sleeping. It is
# not a setting: a cluster's processes do not share its memory.
"""The in-memory broker: every queue of the process in one store, behind one lock.

Brokers of the same name share a queue, as two clusters share one in Redis:
the store is module-level, keyed by queue name, and `reset()` empties it.

A message's `visible` (seconds of the broker's clock) says when it may be handed
out, as in the database broker: now for a new message, the due time for a
delayed one, the end of the lease for a leased one. `leased` stays set after a
lease lapses, until the message is handed out again, acked or requeued, so a
late ack of a lapsed lease still acks it, as on Redis and the database.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..rates import Limit, take
from .base import (
    HISTORY_MINUTES,
    LEASED,
    REMOVED,
    REQUESTED,
    Broker,
    Cancelled,
    Delivery,
    Pending,
    QueueBackend,
    ReadyWatch,
    batch_keys,
    check_priority,
    check_unique,
    visible_pending,
)

# Longest wait between looks at the clock while a dequeue waits: an injected
# clock can move on without anyone notifying the waiters.
MAX_WAIT = 0.05


@dataclass(slots=True)
class _Message:
    seq: int  # the id; with the priority, the message's place in the queue
    priority: int
    payload: bytes
    visible: float
    key: str | None
    attempts: int = 0
    unique: str | None = None
    leased: bool = False
    running: bytes | None = None
    cancel: bool = False
    owner: str | None = None  # the cluster that leased it (dequeue's owner)
    leased_at: float = 0.0  # when it was leased or last renewed

    def place(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


@dataclass(slots=True)
class _Queue:
    messages: dict[str, _Message] = field(default_factory=dict)
    statuses: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # cluster id -> (data, expiry)
    history: dict[tuple[int, str], bytes] = field(default_factory=dict)  # (minute, writer) -> record
    starts: dict[str, list[float]] = field(default_factory=dict)  # rate limit key -> its sliding log
    beats: dict[str, float] = field(default_factory=dict)  # owner -> its last beat, by the broker's clock


# One lock for every queue: a broker holds it for a few dict operations only.
_changed = threading.Condition()
_queues: dict[str, _Queue] = {}
_seq = itertools.count(1)


def reset() -> None:
    """Forget every queue and status of the process (between tests)."""
    with _changed:
        _queues.clear()


class MemoryBroker(QueueBackend):
    """A queue in this process's memory; brokers of one name share it. Safe to use from many threads."""

    blocking = True

    def __init__(self, name: str, lease: float, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, lease)
        self.clock = clock

    def enqueue(self, payload: bytes, priority: int = 0, delay: float = 0.0, key: str | None = None) -> str:
        """Add a package; higher `priority` is handed out first; `delay` seconds hold it back."""
        return self.enqueue_many([payload], priority, delay, [key])[0]

    def enqueue_unique(self, payload: bytes, unique: str, key: str, priority: int = 0, delay: float = 0.0) -> str:
        """Add the package unless a message of the queue holds `unique`; the key of the one that holds it."""
        check_priority(priority)
        check_unique(unique)
        with _changed:
            queue = self._queue()
            holder = next((m for m in queue.messages.values() if m.unique == unique), None)
            if holder is not None:
                return holder.key or ""
            seq = next(_seq)
            queue.messages[str(seq)] = _Message(
                seq, priority, bytes(payload), self.clock() + max(delay, 0.0), key, unique=unique
            )
            _changed.notify_all()
        return key

    def enqueue_many(
        self, payloads: Sequence[bytes], priority: int = 0, delay: float = 0.0, keys: Sequence[str | None] = ()
    ) -> list[str]:
        """Add several packages under one hold of the lock."""
        check_priority(priority)
        keys = batch_keys(payloads, keys)
        ids = []
        with _changed:
            queue = self._queue()
            visible = self.clock() + max(delay, 0.0)
            for payload, key in zip(payloads, keys):
                seq = next(_seq)
                queue.messages[str(seq)] = _Message(seq, priority, bytes(payload), visible, key)
                ids.append(str(seq))
            _changed.notify_all()
        return ids

    def dequeue(self, count: int = 1, timeout: float = 0.0, owner: str | None = None) -> list[Delivery]:
        """Lease up to `count` ready packages, waiting up to `timeout` seconds (of real time) for the first."""
        if count < 1:
            return []
        deadline = time.monotonic() + timeout
        with _changed:
            while True:
                now = self.clock()
                ready = sorted((m for m in self._queue().messages.values() if m.visible <= now), key=_Message.place)
                if ready:
                    return [self._lease(message, now, owner) for message in ready[:count]]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                _changed.wait(min(remaining, MAX_WAIT))

    def renew(self, ids: Sequence[str]) -> None:
        """Extend the leases of `ids` to `lease` seconds from now."""
        with _changed:
            for message in self._leased(ids):
                message.leased_at = self.clock()
                message.visible = message.leased_at + self.lease

    def ack(self, ids: Sequence[str]) -> None:
        """Remove deliveries for good."""
        with _changed:
            messages = self._queue().messages
            for message in self._leased(ids):
                del messages[str(message.seq)]

    def requeue(self, ids: Sequence[str]) -> None:
        """Make leased deliveries ready now; they keep their id, so their place, and their attempts."""
        with _changed:
            for message in self._leased(ids):
                message.leased, message.visible, message.running = False, self.clock(), None
            _changed.notify_all()

    def retry(self, delivery_id: str, payload: bytes, delay: float) -> None:
        """Replace a leased delivery's package and make it ready `delay` seconds from now."""
        with _changed:
            for message in self._leased([delivery_id]):
                message.payload = bytes(payload)
                message.leased, message.visible, message.running = False, self.clock() + max(delay, 0.0), None
            _changed.notify_all()

    def defer(self, delays: Mapping[str, float]) -> None:
        """Make leased deliveries ready after their delays, taking back the attempt of their dequeue."""
        with _changed:
            now = self.clock()
            for message in self._leased(list(delays)):
                message.leased, message.visible, message.running = False, now + max(delays[str(message.seq)], 0.0), None
                message.owner = None
                message.attempts = max(message.attempts - 1, 0)
            _changed.notify_all()

    def take_starts(self, wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]) -> list[float]:
        """Take starts from the queue's sliding logs, under the store's lock."""
        with _changed:
            return take(self._queue().starts, wanted, limits, self.clock())

    def beat(self, owner: str, dead_after: float) -> bool:
        """Record `owner` alive now; release the leases of owners silent for `dead_after` seconds."""
        with _changed:
            now = self.clock()
            queue = self._queue()
            last = queue.beats.get(owner)
            queue.beats[owner] = now
            silent = {o for o, seen in queue.beats.items() if seen <= now - dead_after}
            dead = {o for o in silent if queue.statuses.get(o, (b"", now))[1] <= now}
            if not dead:
                return last is None or last <= now - dead_after
            left = set()
            for message in queue.messages.values():
                if message.leased and message.visible > now and message.owner in dead:
                    if message.leased_at > now - dead_after:
                        left.add(message.owner)  # leased or renewed lately: looked at again next beat
                        continue
                    message.leased, message.visible, message.running, message.owner = False, now, None, None
            for gone in dead - left:
                del queue.beats[gone]
            _changed.notify_all()
        return last is None or last <= now - dead_after

    def held(self, ids: Sequence[str], owner: str) -> list[str]:
        """Those of `ids` still leased by `owner`."""
        with _changed:
            now = self.clock()
            return [str(m.seq) for m in self._leased(ids) if m.owner == owner and m.visible > now]

    def size(self) -> int:
        """Packages the next dequeue may hand out: new, requeued, due or with a lapsed lease."""
        with _changed:
            now = self.clock()
            return sum(m.visible <= now for m in self._queue().messages.values())

    def leased(self) -> int:
        """Packages handed out whose lease has not lapsed."""
        with _changed:
            now = self.clock()
            return sum(m.leased and m.visible > now for m in self._queue().messages.values())

    def ping(self) -> None:
        """Return: memory always answers."""

    def watch(self, brokers: Sequence[Broker]) -> ReadyWatch:
        """Wakes on any change of any queue (they share one condition)."""
        return _ChangeWatch()

    def purge(self) -> None:
        """Remove every package of this queue, ready, delayed or leased, and its rate logs (statuses stay)."""
        with _changed:
            self._queue().messages.clear()
            self._queue().starts.clear()

    def mark_running(self, running: dict[str, bytes]) -> None:
        """Record each leased delivery's running record."""
        with _changed:
            for delivery_id, record in running.items():
                for message in self._leased([delivery_id]):
                    message.running = bytes(record)

    def lookup(self, key: str) -> Pending | None:
        """The newest package enqueued under `key`."""
        with _changed:
            message = self._newest(key)
            return None if message is None else _pending(message, self.clock())

    def pending(self, limit: int = 100) -> list[Pending]:
        """Leased packages, then ready ones in the order they go out, then delayed ones by due time."""
        with _changed:
            now = self.clock()
            messages = self._queue().messages.values()
            leased = sorted((m for m in messages if m.leased and m.visible > now), key=lambda m: m.seq)
            ready = sorted((m for m in messages if m.visible <= now), key=_Message.place)
            delayed = sorted(
                (m for m in messages if not m.leased and m.visible > now), key=lambda m: (m.visible, m.seq)
            )
            return [_pending(m, now) for m in [*leased, *ready, *delayed][:limit]]

    def cancel(self, key: str) -> Cancelled | None:
        """Remove the newest package of `key` unless it is leased; flag a leased one for its cluster."""
        with _changed:
            message = self._newest(key)
            if message is None:
                return None
            pending = _pending(message, self.clock())
            if pending.state == LEASED:
                message.cancel = True
                return Cancelled(REQUESTED, pending)
            del self._queue().messages[pending.id]
            return Cancelled(REMOVED, pending)

    def cancel_requests(self, ids: Sequence[str]) -> list[str]:
        """Those of the leased `ids` that cancel() flagged."""
        with _changed:
            flagged = {str(m.seq) for m in self._leased(ids) if m.cancel}
        return [i for i in ids if i in flagged]

    def publish_status(self, cluster_id: str, data: bytes, ttl: float) -> None:
        """Store the status of `cluster_id`, expiring `ttl` seconds from now; drop the expired ones."""
        with _changed:
            now = self.clock()
            statuses = self._queue().statuses
            for expired in [c for c, (_, expiry) in statuses.items() if expiry <= now]:
                del statuses[expired]
            statuses[cluster_id] = (bytes(data), now + ttl)

    def remove_status(self, cluster_id: str) -> None:
        """Remove the status of `cluster_id` now."""
        with _changed:
            self._queue().statuses.pop(cluster_id, None)

    def statuses(self) -> list[bytes]:
        """The statuses that have not expired."""
        with _changed:
            now = self.clock()
            return [data for data, expiry in self._queue().statuses.values() if expiry > now]

    def write_history(self, minute: int, writer: str, data: bytes) -> None:
        """Store `writer`'s record of `minute`; drop records older than HISTORY_MINUTES by the clock."""
        with _changed:
            history = self._queue().history
            oldest = int(self.clock() // 60) - HISTORY_MINUTES
            for old in [k for k in history if k[0] <= oldest]:
                del history[old]
            if minute > oldest:
                history[(minute, writer)] = bytes(data)

    def read_history(self, since: int) -> list[tuple[int, bytes]]:
        """Every record of the minutes from `since` on (and within HISTORY_MINUTES)."""
        with _changed:
            oldest = int(self.clock() // 60) - HISTORY_MINUTES
            return [(m, data) for (m, _), data in self._queue().history.items() if m >= since and m > oldest]

    def _queue(self) -> _Queue:
        """This broker's queue in the store; the caller holds the lock."""
        queue = _queues.get(self.name)
        if queue is None:
            queue = _queues[self.name] = _Queue()
        return queue

    def _newest(self, key: str) -> _Message | None:
        """The newest message enqueued under `key`; the caller holds the lock."""
        found = [m for m in self._queue().messages.values() if m.key == key]
        return max(found, key=lambda m: m.seq) if found else None

    def _leased(self, ids: Sequence[str]) -> list[_Message]:
        """The messages of `ids` that are leased, in `ids` order; the caller holds the lock."""
        messages = self._queue().messages
        found = (messages.get(i) for i in dict.fromkeys(map(str, ids)))
        return [m for m in found if m is not None and m.leased]

    def _lease(self, message: _Message, now: float, owner: str | None) -> Delivery:
        # A lapsed lease's running record was the dead cluster's, not the new one's.
        message.leased, message.visible, message.running = True, now + self.lease, None
        message.owner, message.leased_at = owner, now
        if owner is not None:  # an owner that leases before its first beat is known from now on, as never seen
            self._queue().beats.setdefault(owner, float("-inf"))
        message.attempts += 1
        return Delivery(id=str(message.seq), payload=message.payload, attempts=message.attempts)


def _pending(message: _Message, now: float) -> Pending:
    return visible_pending(str(message.seq), message.leased, message.visible, now, message.payload,
                           message.attempts, message.running)


class _ChangeWatch(ReadyWatch):
    """Waits on the store's one condition, which every enqueue, requeue and retry notifies; MAX_WAIT at most
    (an injected clock moves on without notifying)."""

    def wait(self, seconds: float) -> None:
        with _changed:
            _changed.wait(min(seconds, MAX_WAIT))
