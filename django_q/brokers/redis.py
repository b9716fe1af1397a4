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
    django_q:{name}:status    HASH    cluster id -> status bytes (django_q.status)
    django_q:{name}:status_expiry  ZSET  cluster id -> expiry, ms of the server's clock

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.sentinel import Sentinel

from ..exceptions import BrokerConnectionError, BrokerError
from .base import PRIORITY_MAX, PRIORITY_MIN, Broker, Cancelled, Delivery, Pending

KEY_NAMES = ("seq", "ready", "payload", "attempts", "leased", "delayed", "wake", "task", "key", "running", "cancel")
PRIORITY_SHIFT = 2**44
# Enough tokens to wake every consumer of a busy queue; more would only be
# popped and found stale.
WAKE_CAP = 64
# Scripts move at most this many due or lapsed ids per call, so one call never
# blocks the server for long; the next call moves the rest.
RELEASE_BATCH = 1000
ENQUEUE_BATCH = 1000
# Shortest BLPOP: its timeout 0 would mean "forever".
MIN_BLOCK = 0.005

# Every script gets the keys in KEY_NAMES order: KEYS[1] seq ... KEYS[7] wake ... KEYS[11] cancel.
_LUA_COMMON = f"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Put ids of a timed ZSET whose time has come back in ready, at their own place.
local function release(zset, now)
  local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, {RELEASE_BATCH})
  for _, id in ipairs(ids) do
    redis.call('ZREM', zset, id)
    redis.call('HDEL', KEYS[10], id)
    if redis.call('HEXISTS', KEYS[3], id) == 1 then
      redis.call('ZADD', KEYS[2], id, id)
    end
  end
end
local function wake()
  redis.call('LPUSH', KEYS[7], 1)
  redis.call('LTRIM', KEYS[7], 0, {WAKE_CAP - 1})
end
-- Forget everything kept about id but its place in the sorted sets.
local function forget(id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[10], id)
  redis.call('SREM', KEYS[11], id)
  local key = redis.call('HGET', KEYS[9], id)
  if key then
    if redis.call('HGET', KEYS[8], key) == id then redis.call('HDEL', KEYS[8], key) end
    redis.call('HDEL', KEYS[9], id)
  end
end
-- (state, id, payload, attempts, due ms or -1, running or false) of a message still held.
local function describe(id, now)
  local payload = redis.call('HGET', KEYS[3], id)
  if not payload then return nil end
  local attempts = tonumber(redis.call('HGET', KEYS[4], id) or '0')
  local lease = redis.call('ZSCORE', KEYS[5], id)
  if lease and tonumber(lease) > now then
    return {{'leased', id, payload, attempts, lease, redis.call('HGET', KEYS[10], id)}}
  end
  local due = redis.call('ZSCORE', KEYS[6], id)
  if due and tonumber(due) > now then return {{'delayed', id, payload, attempts, due, false}} end
  return {{'queued', id, payload, attempts, -1, false}}
end
"""

# ARGV: priority base, delay ms, payload, key, payload, key...  (key '' for none).
# Returns the new ids.
_ENQUEUE = """
local base = tonumber(ARGV[1])
local delay = tonumber(ARGV[2])
local due = nil
if delay > 0 then due = now_ms() + delay end
local n = (#ARGV - 2) / 2
local first = redis.call('INCRBY', KEYS[1], n) - n
local ids = {}
for i = 1, n do
  local id = string.format('%d', base + first + i)
  redis.call('HSET', KEYS[3], id, ARGV[2 * i + 1])
  local key = ARGV[2 * i + 2]
  if key ~= '' then
    redis.call('HSET', KEYS[8], key, id)
    redis.call('HSET', KEYS[9], id, key)
  end
  if due then redis.call('ZADD', KEYS[6], due, id) else redis.call('ZADD', KEYS[2], id, id) end
  ids[i] = id
end
-- A delayed message wakes consumers too, so that they shorten their wait to its due time.
wake()
return ids
"""

# ARGV: count, lease ms.  Returns {hint ms, id, payload, attempts, id, ...}; hint
# is how long until a delayed message is due or a lease lapses (-1: never).
_DEQUEUE = """
local count = tonumber(ARGV[1])
local now = now_ms()
release(KEYS[6], now)
release(KEYS[5], now)
local out = {-1}
local got = 0
while got < count do
  local popped = redis.call('ZPOPMIN', KEYS[2], count - got)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local id = popped[i]
    local body = redis.call('HGET', KEYS[3], id)
    if body then
      redis.call('ZADD', KEYS[5], now + tonumber(ARGV[2]), id)
      out[#out + 1] = id
      out[#out + 1] = body
      out[#out + 1] = redis.call('HINCRBY', KEYS[4], id, 1)
      got = got + 1
    end
  end
end
-- Pass the baton: another blocked consumer can take what this one left.
if redis.call('ZCARD', KEYS[2]) > 0 then wake() end
for _, key in ipairs({KEYS[6], KEYS[5]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = tonumber(first[2]) - now
    if out[1] < 0 or wait < out[1] then out[1] = wait end
  end
end
return out
"""

# ARGV: lease ms, id...  XX: an id that is not leased stays unleased.
_RENEW = """
local deadline = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[5], 'XX', deadline, ARGV[i]) end
"""

_ACK = """
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[5], id) == 1 then forget(id) end
end
"""

_REQUEUE = """
local moved = 0
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[5], id) == 1 and redis.call('HEXISTS', KEYS[3], id) == 1 then
    redis.call('HDEL', KEYS[10], id)
    redis.call('ZADD', KEYS[2], id, id)
    moved = moved + 1
  end
end
if moved > 0 then wake() end
"""

# ARGV: id, payload, delay ms.  A leased message gets the new payload and is
# ready again after the delay, with its id (so its place) and attempts.
_RETRY = """
local id = ARGV[1]
if redis.call('ZREM', KEYS[5], id) == 1 and redis.call('HEXISTS', KEYS[3], id) == 1 then
  redis.call('HSET', KEYS[3], id, ARGV[2])
  redis.call('HDEL', KEYS[10], id)
  local delay = tonumber(ARGV[3])
  if delay > 0 then redis.call('ZADD', KEYS[6], now_ms() + delay, id) else redis.call('ZADD', KEYS[2], id, id) end
  wake()
end
"""

# ARGV: id, record, id, record...  Only for ids still leased.
_MARK_RUNNING = """
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[5], ARGV[i]) then redis.call('HSET', KEYS[10], ARGV[i], ARGV[i + 1]) end
end
"""

# ARGV: key.  Read only.  Returns describe() of the message, or an empty list.
_LOOKUP = """
local id = redis.call('HGET', KEYS[8], ARGV[1])
if not id then return {} end
return describe(id, now_ms()) or {}
"""

# ARGV: key.  Removes a message that is not leased; flags a leased one.
# Returns {outcome, describe()...}, or an empty list.
_CANCEL = """
local id = redis.call('HGET', KEYS[8], ARGV[1])
if not id then return {} end
local found = describe(id, now_ms())
if not found then return {} end
if found[1] == 'leased' then
  redis.call('SADD', KEYS[11], id)
  return {'requested', unpack(found)}
end
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[5], id)
redis.call('ZREM', KEYS[6], id)
forget(id)
return {'removed', unpack(found)}
"""

# ARGV: limit.  Read only.  Returns describe() of each, flattened: leased, ready, delayed.
_PENDING = """
local limit = tonumber(ARGV[1])
local now = now_ms()
local out = {}
local function add(ids)
  for _, id in ipairs(ids) do
    if #out >= limit * 6 then return end
    local found = describe(id, now)
    if found then for _, v in ipairs(found) do out[#out + 1] = v end end
  end
end
add(redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. now, '+inf', 'LIMIT', 0, limit))
add(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, limit))
add(redis.call('ZRANGE', KEYS[2], 0, limit - 1))
add(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '+inf', 'LIMIT', 0, limit))
return out
"""

# Read only: due delayed messages and lapsed leases count as waiting, as they
# would be handed out by the next dequeue.  Returns {waiting, leased}.
_COUNTS = """
local now = now_ms()
local due = redis.call('ZCOUNT', KEYS[6], '-inf', now)
local lapsed = redis.call('ZCOUNT', KEYS[5], '-inf', now)
local leased = redis.call('ZCARD', KEYS[5]) - lapsed
return {redis.call('ZCARD', KEYS[2]) + due + lapsed, leased}
"""


# The status keys expire with their last entry, so a queue whose clusters all
# died leaves nothing behind.  KEYS: status, status_expiry.  ARGV: id, data, ttl ms.
_PUBLISH_STATUS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[1], id)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
"""

# KEYS: status, status_expiry.  Read only: expired entries are skipped here and
# removed by the next publication.
_STATUSES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""


try:  # hiredis packs a command in C; redis-py's own encoder checks each argument's type in Python
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is an optional extra
    _pack = None


class _Lua:
    """Calls the broker's Lua scripts straight on one connection of its own: EVALSHA written, reply read.

    redis-py's client path (command lookup, pool checkout, response callbacks,
    observability hooks) costs about twice what the call itself does: an
    `async_task` spent most of its time there. A broker is used by one thread
    at a time, so one connection serves all its scripts. A script the server
    lost (a restart) is loaded again; a call on a connection that went stale
    is made once more on a new one. Other failures raise redis-py's errors.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.conn: Any = None

    def script(self, source: str) -> Callable[..., Any]:
        script = self.client.register_script(source)  # computes the SHA; nothing is sent

        def call(keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
            return self.call(script, keys, args)

        return call

    def call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        for attempt in range(3):
            if self.conn is None:
                # From the pool, which connects it: a Sentinel pool asks where the primary is now.
                self.conn = self.client.connection_pool.get_connection()
            try:
                command = ("EVALSHA", script.sha, len(keys), *keys, *args)
                self.conn.send_packed_command([_pack(command)] if _pack else self.conn.pack_command(*command), False)
                return self.conn.read_response()
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.script)
            except redis.exceptions.ResponseError:
                raise  # the script failed; its reply was read, the connection is fine
            except redis.exceptions.ConnectionError:
                self.close()  # the next call takes a new connection
                if attempt:
                    raise
            except BaseException:  # a timeout, or an interrupted read, leaves a reply unread
                self.close()
                raise
        raise redis.exceptions.NoScriptError("the script was lost again as soon as it was loaded")

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.disconnect()
            self.client.connection_pool.release(conn)


class RedisBroker(Broker):
    """A queue in Redis; `dequeue` blocks on the server and wakes as soon as a package arrives."""

    blocking = True

    def __init__(self, name: str, lease: float, redis_setting: str | dict[str, Any]) -> None:
        super().__init__(name, lease)
        self._client = _make_client(redis_setting)
        self._keys = [f"django_q:{{{name}}}:{key}" for key in KEY_NAMES]
        socket_timeout = self._client.connection_pool.connection_kwargs.get("socket_timeout")
        # A BLPOP must end before the socket read times out, or redis-py raises.
        self._max_block = 0.8 * socket_timeout if socket_timeout else None

        self._lua = _Lua(self._client)
        register = self._lua.script
        self._enqueue = register(_LUA_COMMON + _ENQUEUE)
        self._dequeue = register(_LUA_COMMON + _DEQUEUE)
        self._renew = register(_LUA_COMMON + _RENEW)
        self._ack = register(_LUA_COMMON + _ACK)
        self._requeue = register(_LUA_COMMON + _REQUEUE)
        self._counts = register(_LUA_COMMON + _COUNTS)
        self._retry = register(_LUA_COMMON + _RETRY)
        self._mark_running = register(_LUA_COMMON + _MARK_RUNNING)
        self._lookup = register(_LUA_COMMON + _LOOKUP)
        self._cancel = register(_LUA_COMMON + _CANCEL)
        self._pending = register(_LUA_COMMON + _PENDING)
        self._status_keys = [f"django_q:{{{name}}}:status", f"django_q:{{{name}}}:status_expiry"]
        self._publish_status = register(_PUBLISH_STATUS)
        self._statuses = register(_STATUSES)

    def enqueue(self, payload: bytes, priority: int = 0, delay: float = 0.0, key: str | None = None) -> str:
        """Add a package; higher `priority` is handed out first; `delay` seconds hold it back."""
        args = [_priority_base(priority), max(0, round(delay * 1000)), payload, key or ""]
        with _translate():
            (msg_id,) = self._enqueue(keys=self._keys, args=args)
        return msg_id.decode()

    def enqueue_many(
        self, payloads: Sequence[bytes], priority: int = 0, delay: float = 0.0, keys: Sequence[str | None] = ()
    ) -> list[str]:
        """Add several packages, up to ENQUEUE_BATCH per script call."""
        base = _priority_base(priority)
        delay_ms = max(0, round(delay * 1000))
        keys = list(keys) or [None] * len(payloads)
        if len(keys) != len(payloads):
            raise ValueError(f"{len(payloads)} payloads but {len(keys)} keys")
        ids: list[str] = []
        with _translate():
            for start in range(0, len(payloads), ENQUEUE_BATCH):
                args: list[Any] = [base, delay_ms]
                for payload, key in zip(payloads[start : start + ENQUEUE_BATCH], keys[start : start + ENQUEUE_BATCH]):
                    args += (payload, key or "")
                ids.extend(i.decode() for i in self._enqueue(keys=self._keys, args=args))
        return ids

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Delivery]:
        """Lease up to `count` packages, blocking on the wake list up to `timeout` seconds."""
        if count < 1:
            return []
        deadline = time.monotonic() + timeout
        lease_ms = max(1, round(self.lease * 1000))
        with _translate():
            while True:
                hint_ms, *flat = self._dequeue(keys=self._keys, args=[count, lease_ms])
                if flat:
                    return [
                        Delivery(id=flat[i].decode(), payload=flat[i + 1], attempts=int(flat[i + 2]))
                        for i in range(0, len(flat), 3)
                    ]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                # Nobody pushes a token when a delay ends or a lease lapses, so
                # wake up by then on our own.
                wait = remaining if hint_ms < 0 else min(remaining, hint_ms / 1000)
                if self._max_block is not None:
                    wait = min(wait, self._max_block)
                self._client.blpop([self._keys[6]], timeout=max(wait, MIN_BLOCK))

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
        wanted = {i.decode() for i in flagged}
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
        """Delete every key of this queue."""
        with _translate():
            self._client.delete(*self._keys)

    def setup_warnings(self) -> list[str]:
        """Ways this Redis could lose queued tasks: no append-only file, or a policy that evicts keys."""
        try:
            config = self._client.config_get("appendonly") | self._client.config_get("maxmemory-policy")
        except redis.exceptions.RedisError:
            return []  # CONFIG is often disabled on managed Redis; nothing to tell then
        found = {_text(k): _text(v) for k, v in config.items()}
        warnings = []
        if found.get("appendonly") == "no":
            warnings.append("Redis has appendonly off: queued tasks are lost if Redis restarts")
        policy = found.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            warnings.append(f"Redis maxmemory-policy is {policy}: under memory pressure queued tasks can be evicted")
        return warnings

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

    def close(self) -> None:
        """Close the client and its connection pool."""
        self._lua.close()
        self._client.close()


def _make_client(setting: str | dict[str, Any]) -> redis.Redis:
    """A client of its own with bounded connect and read times, returning bytes.

    A dict with `sentinels` ([(host, port), ...]) and `service_name` connects
    through Redis Sentinel: the client asks the sentinels for the primary and
    asks again after a connection fails, so a failover is followed.
    """
    # Without a socket timeout a vanished server (not a refused connection)
    # would hang a consumer forever; the user's values win.
    defaults: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 30.0}
    if isinstance(setting, str):
        client = redis.Redis.from_url(setting, **defaults)
    elif "sentinels" in setting:
        options = {**defaults, **setting}
        sentinels = [tuple(s) for s in options.pop("sentinels")]
        service = options.pop("service_name", "mymaster")
        sentinel_kwargs = options.pop("sentinel_kwargs", None) or {
            "socket_connect_timeout": options["socket_connect_timeout"],
            "socket_timeout": options["socket_connect_timeout"],
        }
        client = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs).master_for(service, **options)
    else:
        client = redis.Redis(**{**defaults, **setting})
    # Payloads are bytes: a client that decodes replies would corrupt them.
    client.connection_pool.connection_kwargs["decode_responses"] = False
    return client


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
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}, not {priority}")
    return (PRIORITY_MAX - priority) * PRIORITY_SHIFT


@contextmanager
def _translate() -> Iterator[None]:
    """Turn redis-py errors into the broker error tree, keeping the original as the cause."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError) as exc:
        # ReadOnlyError: a primary was demoted under us during a failover.
        raise BrokerConnectionError(f"Redis: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BrokerError(f"Redis: {exc}") from exc
