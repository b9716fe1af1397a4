"""The Redis broker: leased deliveries with priorities and delays, atomic in Lua scripts.

Key layout, for queue `name` (the braces are a Redis Cluster hash tag, so every
key of one queue lives in one slot and a script may touch them all):

    django_q:{name}:seq       STRING  INCR counter, the source of message ids
    django_q:{name}:ready     ZSET    id -> id; lowest score is handed out first
    django_q:{name}:payload   HASH    id -> package bytes
    django_q:{name}:attempts  HASH    id -> deliveries so far
    django_q:{name}:leased    ZSET    id -> lease deadline, ms of the server's clock
    django_q:{name}:delayed   ZSET    id -> due time, ms of the server's clock
    django_q:{name}:wake      LIST    wake-up tokens that blocked consumers BLPOP
    django_q:{name}:task      HASH    key (task id) -> id, for lookup and cancel
    django_q:{name}:key       HASH    id -> key, to clean up the above on ack
    django_q:{name}:running   HASH    id -> running record (mark_running), while leased
    django_q:{name}:cancel    SET     leased ids that cancel() asked their cluster to stop
    django_q:{name}:unique    HASH    unique key -> id of the message holding it (enqueue_unique)
    django_q:{name}:unique_of HASH    id -> unique key, to free it when the message is forgotten
    django_q:{name}:owner     HASH    id -> cluster id that leased it (dequeue's owner)
    django_q:{name}:beats     ZSET    cluster id -> its last beat, ms of the server's clock
    django_q:{name}:status    HASH    cluster id -> status bytes (django_q.status)
    django_q:{name}:status_expiry  ZSET  cluster id -> expiry, ms of the server's clock
    django_q:{name}:history:{minute}  HASH  writer -> its record of that minute (django_q.history);
                                            the key expires HISTORY_MINUTES after its minute
    django_q:{name}:rate...   the rate limits' sliding logs: see django_q.brokers.redis_rates

A message id is its ready score: (100 - priority) * 2**44 + seq, written as an
integer (below 2**53, so a double holds it exactly). Lower scores mean higher
priority, then first in, first out; and a requeued or lapsed message goes back
with `ZADD ready id id` to exactly the place it had.

Why not Streams, or lists with BLMOVE: measured both (bench/redis_patterns.py,
2026-11-27, this broker as of b8a9349, Redis 7.0, one consumer, medians of 9
interleaved rounds; lists / Streams / these sorted sets): dequeue+ack 4,200 /
4,600 / 3,700 msg/s one at a time, 22,000 / 45,000 / 28,000 ten at a time;
enqueue 9,600 / 17,800 / 9,900 msg/s one call each, 133,000 / 108,000 / 150,000
in batches of 100; taking back 1,000 lapsed deliveries 21 / 4.7 / 13 ms.
Streams deliver faster (1.2-1.7x a message, 3x at recovery; 0.7x at batched
enqueue), but a consumer group has no priorities, no delays and no requeue: a
pending entry comes back only through XAUTOCLAIM, once idle long enough. Lists
have no priorities or delays either, and one heartbeat per consumer, not a
lease per message. Sorted sets give priorities, delays and per-message leases,
a requeued or lapsed message keeps its place, and Lua scripts make each move
between them atomic, with `TIME` as the one clock every cluster shares.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from ..rates import Limit
from .base import (
    HISTORY_MINUTES,
    PRIORITY_MAX,
    Cancelled,
    Delivery,
    Pending,
    QueueBackend,
    ReadyWatch,
    batch_keys,
    check_priority,
    check_unique,
)
from .redis_lua import (
    ACK,
    CANCEL,
    COMMON,
    COUNTS,
    DEQUEUE,
    ENQUEUE,
    ENQUEUE_UNIQUE,
    LOOKUP,
    MARK_RUNNING,
    PENDING,
    PUBLISH_STATUS,
    RENEW,
    REQUEUE,
    RETRY,
    STATUSES,
)
from .redis_calls import Lua
from .redis_calls import translate as _translate
from .redis_client import make_client
from .redis_owners import RedisOwners
from .redis_rates import DEFER, TAKE_STARTS, defer_args, rate_keys, take_call

KEY_NAMES = (
    "seq", "ready", "payload", "attempts", "leased", "delayed", "wake", "task", "key", "running", "cancel",
    "unique", "unique_of", "owner", "beats",
)
PRIORITY_SHIFT = 2**44
ENQUEUE_BATCH = 1000
ENQUEUE_KEYS = 9
# Shortest BLPOP: its timeout 0 would mean "forever".
MIN_BLOCK = 0.005

class RedisBroker(RedisOwners, QueueBackend):
    """A queue in Redis; `dequeue` blocks on the server and wakes as soon as a package arrives."""

    blocking = True

    def __init__(
        self, name: str, lease: float, redis_setting: str | dict[str, Any] | redis.Redis,
        enqueue_timeout: float | None = None,
    ) -> None:
        super().__init__(name, lease)
        self._client = make_client(redis_setting)
        self._keys = [f"django_q:{{{name}}}:{key}" for key in KEY_NAMES]
        self._enqueue_keys = self._keys[:ENQUEUE_KEYS]  # seq ... key: all that ENQUEUE names
        socket_timeout = self._client.connection_pool.connection_kwargs.get("socket_timeout")
        # A BLPOP must end before the socket read times out, or redis-py raises.
        self._max_block = 0.8 * socket_timeout if socket_timeout else None
        self.hint_ms = -1  # of the last dequeue: ms until a delay ends or a lease lapses; -1 none
        self._emptied_at = 0.0  # monotonic time of the last dequeue that left nothing ready; 0: it left some

        self._lua = Lua(self._client)
        register = self._lua.script
        # Enqueues go through a connection of their own, whose every connect and
        # read is bounded by enqueue_timeout and never retried: a caller of
        # async_task (a web request) gets BrokerConnectionError from a server
        # that does not answer, instead of waiting out the retries and long
        # reads that keep a cluster's own calls going through a short stall.
        self._sender = Lua(make_client(redis_setting, enqueue_timeout)) if enqueue_timeout else self._lua
        self._enqueue = self._sender.bind(ENQUEUE, self._enqueue_keys)
        self._enqueue_unique = self._sender.bind(ENQUEUE_UNIQUE, self._keys)
        self._dequeue = register(COMMON + DEQUEUE)
        self._renew = register(COMMON + RENEW)
        self._ack = register(COMMON + ACK)
        self._requeue = register(COMMON + REQUEUE)
        self._counts = register(COMMON + COUNTS)
        self._retry = register(COMMON + RETRY)
        self._defer = register(COMMON + DEFER)
        self._take_starts = register(TAKE_STARTS)
        self._mark_running = register(COMMON + MARK_RUNNING)
        self._lookup = register(COMMON + LOOKUP)
        self._cancel = register(COMMON + CANCEL)
        self._pending = register(COMMON + PENDING)
        self._status_keys = [f"django_q:{{{name}}}:status", f"django_q:{{{name}}}:status_expiry"]
        self._publish_status = register(PUBLISH_STATUS)
        self._statuses = register(STATUSES)

    @property
    def client(self) -> redis.Redis:
        """The redis-py client, for what reads other keys of the same server (django_q.legacy)."""
        return self._client

    def enqueue(self, payload: bytes, priority: int = 0, delay: float = 0.0, key: str | None = None) -> str:
        """Add a package; higher `priority` is handed out first; `delay` seconds hold it back."""
        args = [_priority_base(priority), max(0, round(delay * 1000)), payload, key or ""]
        with _translate():
            return self._enqueue(args).decode()

    def enqueue_unique(self, payload: bytes, unique: str, key: str, priority: int = 0, delay: float = 0.0) -> str:
        """Add the package unless the message holding `unique` is still here; the key of the holder (one script)."""
        args = [_priority_base(priority), max(0, round(delay * 1000)), payload, key, check_unique(unique)]
        with _translate():
            holder = self._enqueue_unique(args)
        return _text(holder)

    def enqueue_many(
        self, payloads: Sequence[bytes], priority: int = 0, delay: float = 0.0, keys: Sequence[str | None] = ()
    ) -> list[str]:
        """Add several packages, up to ENQUEUE_BATCH per script call."""
        base = _priority_base(priority)
        delay_ms = max(0, round(delay * 1000))
        keys = batch_keys(payloads, keys)
        ids: list[str] = []
        with _translate():
            for start in range(0, len(payloads), ENQUEUE_BATCH):
                args: list[Any] = [base, delay_ms]
                for payload, key in zip(payloads[start : start + ENQUEUE_BATCH], keys[start : start + ENQUEUE_BATCH]):
                    args += (payload, key or "")
                reply = self._enqueue(args)
                ids.extend([reply.decode()] if isinstance(reply, bytes) else [i.decode() for i in reply])
        return ids

    def dequeue(self, count: int = 1, timeout: float = 0.0, owner: str | None = None) -> list[Delivery]:
        """Lease up to `count` packages, blocking on the wake list up to `timeout` seconds."""
        if count < 1:
            return []
        now = time.monotonic()
        deadline = now + timeout
        lease_ms = max(1, round(self.lease * 1000))
        args = [count, lease_ms, owner or ""]
        # Seconds of the BLPOP that goes before the next dequeue. After a dequeue
        # that emptied the queue, whatever became ready since pushed a wake token
        # or comes due by that dequeue's hint: a dequeue now would find nothing
        # else, so a waiting one starts with the BLPOP (an idle cluster's wake
        # then costs one round trip, not two).
        block = self._wait(deadline - now, now - self._emptied_at) if self._emptied_at and timeout > 0 else None
        with _translate():
            while True:
                if block is None:
                    hint_ms, *flat = self._dequeue(keys=self._keys, args=args)
                else:
                    # The dequeue rides behind the BLPOP on the wake list: the
                    # server runs it as soon as a token arrives or the wait ends.
                    blpop = ("BLPOP", self._keys[6], f"{block + 0.0005:.3f}")  # rounded up to the ms
                    hint_ms, *flat = self._lua.call_after(blpop, self._dequeue.script, self._keys, args)
                self.hint_ms = hint_ms
                now = time.monotonic()
                self._emptied_at = now if len(flat) < 3 * count else 0.0
                if flat:
                    return [
                        Delivery(id=flat[i].decode(), payload=flat[i + 1], attempts=int(flat[i + 2]))
                        for i in range(0, len(flat), 3)
                    ]
                if deadline <= now:
                    return []
                block = self._wait(deadline - now, 0.0)

    def _wait(self, remaining: float, elapsed: float) -> float | None:
        """Seconds the next BLPOP may wait: `remaining`, or until the last dequeue's hint, `elapsed` seconds
        ago, comes due (nobody pushes a token when a delay ends or a lease lapses); None if it is due now."""
        wait = remaining if self.hint_ms < 0 else min(remaining, self.hint_ms / 1000 - elapsed)
        if self._max_block is not None:
            wait = min(wait, self._max_block)
        if elapsed and wait <= 0:
            return None
        return max(wait, MIN_BLOCK)

    def renew(self, ids: Sequence[str]) -> None:
        """Extend the leases of `ids` to `lease` seconds from now."""
        if ids:
            with _translate():
                self._renew(keys=self._keys, args=[max(1, round(self.lease * 1000)), *ids])

    def ack(self, ids: Sequence[str]) -> None:
        """Remove deliveries for good."""
        if ids:
            with _translate():
                self._ack(keys=self._keys, args=list(ids))

    def requeue(self, ids: Sequence[str]) -> None:
        """Make leased deliveries ready again now, at their own place and with their attempts."""
        if ids:
            with _translate():
                self._requeue(keys=self._keys, args=list(ids))

    def retry(self, delivery_id: str, payload: bytes, delay: float) -> None:
        """Replace a leased delivery's package and make it ready `delay` seconds from now."""
        with _translate():
            self._retry(keys=self._keys, args=[delivery_id, payload, max(0, round(delay * 1000))])

    def defer(self, delays: Mapping[str, float]) -> None:
        """Make leased deliveries ready after their delays, taking back the attempt of their dequeue."""
        if delays:
            with _translate():
                self._defer(keys=self._keys, args=defer_args(delays))

    def take_starts(self, wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]) -> list[float]:
        """Take starts from the sliding logs in one script, on the server's clock."""
        if not wanted:
            return []
        keys, args = take_call(self.name, wanted, limits)
        with _translate():
            return [int(us) / 1_000_000 for us in self._take_starts(keys=keys, args=args)]

    def mark_running(self, running: dict[str, bytes]) -> None:
        """Record each leased delivery's running record."""
        if running:
            with _translate():
                self._mark_running(keys=self._keys, args=[v for pair in running.items() for v in pair])

    def lookup(self, key: str) -> Pending | None:
        """The message enqueued under `key`, while it is held."""
        with _translate():
            found = self._lookup(keys=self._keys, args=[key])
        return _pending(found) if found else None

    def pending(self, limit: int = 100) -> list[Pending]:
        """Up to `limit` messages: leased, then ready in the order they go out, then delayed by due time."""
        with _translate():
            flat = self._pending(keys=self._keys, args=[max(1, limit)])
        return [_pending(flat[i : i + 6]) for i in range(0, len(flat), 6)][:limit]

    def cancel(self, key: str) -> Cancelled | None:
        """Remove the message of `key` unless it is leased; flag a leased one for its cluster."""
        with _translate():
            found = self._cancel(keys=self._keys, args=[key])
        return Cancelled(found[0].decode(), _pending(found[1:])) if found else None

    def cancel_requests(self, ids: Sequence[str]) -> list[str]:
        """Those of `ids` that cancel() flagged."""
        if not ids:
            return []
        with _translate():
            flagged = self._client.smembers(self._keys[10])
        wanted = {_text(i) for i in flagged}
        return [i for i in ids if i in wanted]

    def size(self) -> int:
        """Packages waiting to be handed out (leased and delayed ones excluded)."""
        with _translate():
            return int(self._counts(keys=self._keys)[0])

    def leased(self) -> int:
        """Packages handed out whose lease has not lapsed."""
        with _translate():
            return int(self._counts(keys=self._keys)[1])

    def ping(self) -> None:
        """Return if Redis answers PING; raise BrokerConnectionError otherwise."""
        with _translate():
            self._client.ping()

    def purge(self) -> None:
        """Delete every key of this queue, its rate logs included."""
        with _translate():
            logs = self._client.smembers(rate_keys(self.name)[1])
            self._client.delete(*self._keys, *rate_keys(self.name), *logs)

    def setup_warnings(self) -> list[str]:
        """Ways this Redis could lose queued tasks: no append-only file, or a policy that evicts keys."""
        try:
            config = self._client.config_get("appendonly") | self._client.config_get("maxmemory-policy")
        except redis.exceptions.RedisError:
            return []  # CONFIG is often disabled on managed Redis; nothing to tell then
        # redis-py types the reply as str or None; this client (decode_responses off) gets bytes.
        found = {_text(k): _text(v) for k, v in config.items()}  # type: ignore[arg-type]
        warnings = []
        if found.get("appendonly") == "no":
            warnings.append("Redis has appendonly off: queued tasks are lost if Redis restarts")
        policy = found.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            warnings.append(f"Redis maxmemory-policy is {policy}: under memory pressure queued tasks can be evicted")
        return warnings

    def watch(self, brokers: Sequence[Any]) -> ReadyWatch:
        """BLPOP on the wake lists of every queue of `brokers` at once (they share this server)."""
        return _WakeWatch(self, list(brokers))

    def publish_status(self, cluster_id: str, data: bytes, ttl: float) -> None:
        """Store the status of `cluster_id` in the status hash, expiring `ttl` seconds from now."""
        with _translate():
            self._publish_status(keys=self._status_keys, args=[cluster_id, data, max(1, round(ttl * 1000))])

    def remove_status(self, cluster_id: str) -> None:
        """Remove the status of `cluster_id` now."""
        with _translate():
            pipe = self._client.pipeline()
            pipe.hdel(self._status_keys[0], cluster_id)
            pipe.zrem(self._status_keys[1], cluster_id)
            pipe.execute()

    def statuses(self) -> list[bytes]:
        """The statuses that have not expired."""
        with _translate():
            return [data for data in self._statuses(keys=self._status_keys) if data is not None]

    def write_history(self, minute: int, writer: str, data: bytes) -> None:
        """Store `writer`'s record in the hash of `minute`, which expires HISTORY_MINUTES after that minute."""
        key = f"django_q:{{{self.name}}}:history:{minute}"
        with _translate():
            pipe = self._client.pipeline(transaction=False)
            pipe.hset(key, writer, data)
            pipe.expireat(key, (minute + HISTORY_MINUTES + 1) * 60)
            pipe.execute()

    def read_history(self, since: int) -> list[tuple[int, bytes]]:
        """Every record of the minutes from `since` to the next one (a writer's clock may run a little ahead)."""
        minutes = range(max(since, int(time.time() // 60) - HISTORY_MINUTES + 1), int(time.time() // 60) + 2)
        with _translate():
            pipe = self._client.pipeline(transaction=False)
            for minute in minutes:
                pipe.hvals(f"django_q:{{{self.name}}}:history:{minute}")
            return [(minute, data) for minute, found in zip(minutes, pipe.execute()) for data in found]

    def close(self) -> None:
        """Close the clients and their connection pools."""
        for lua in {self._sender, self._lua}:
            lua.close()
            lua.client.close()


class _WakeWatch(ReadyWatch):
    """Waits for a wake token of any of several queues, or for the soonest due time their last dequeues saw.

    A token an enqueue pushes stays in its list until popped, so nothing is
    missed between the dequeues and the wait: `arm` has nothing to do.
    """

    def __init__(self, first: RedisBroker, brokers: list[RedisBroker]) -> None:
        self.first = first
        self.brokers = brokers
        self.wake_keys = [b._keys[6] for b in brokers]

    def wait(self, seconds: float) -> None:
        hints = [b.hint_ms / 1000 for b in self.brokers if b.hint_ms >= 0]
        wait = min([seconds, *hints])
        if self.first._max_block is not None:
            wait = min(wait, self.first._max_block)
        with _translate():
            self.first._client.blpop(self.wake_keys, timeout=max(wait, MIN_BLOCK))


def _pending(found: list[Any]) -> Pending:
    """A Pending from the (state, id, payload, attempts, due ms, running) the scripts return."""
    state, msg_id, payload, attempts, due, running = found
    due_ms = float(due)
    return Pending(
        id=_text(msg_id),
        state=_text(state),
        payload=payload,
        attempts=int(attempts),
        due=due_ms / 1000 if due_ms >= 0 else None,
        running=running,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _priority_base(priority: int) -> int:
    return (PRIORITY_MAX - check_priority(priority)) * PRIORITY_SHIFT
