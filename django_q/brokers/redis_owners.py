"""The Redis broker's owners: which cluster leased each message, and releasing a dead cluster's leases.

The `owner` hash (id -> cluster id) is written by DEQUEUE and cleared by
forget(); the `beats` sorted set (cluster id -> ms of its last beat) by BEAT,
and by DEQUEUE, as 0 (never), for an owner that leases before it ever beat
(see the key layout in django_q.brokers.redis). BEAT is the whole decision, in
one script: record the caller's beat; if some owner has been silent for
`dead_after` ms and has no status that has not expired either, move its
leased messages back to ready at their own place, except those leased or
renewed within `dead_after` ms (their owner's record stays, so the next beat
looks again). When nobody is silent it costs a ZSCORE, a ZADD and a
ZRANGEBYSCORE that finds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from .redis_calls import Lua, translate
from .redis_lua import COMMON

# KEYS: KEY_NAMES, then status_expiry.  ARGV: owner, dead_after ms, lease ms.
# Returns 1 if the owner had not beaten within dead_after (or never had), else 0.
BEAT = """
local now = now_ms()
local dead_after = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local last = redis.call('ZSCORE', KEYS[15], ARGV[1])
redis.call('ZADD', KEYS[15], now, ARGV[1])
local out = 0
if not last or tonumber(last) <= now - dead_after then out = 1 end
local silent = redis.call('ZRANGEBYSCORE', KEYS[15], '-inf', now - dead_after)
if #silent == 0 then return out end
local dead, any = {}, false
for _, owner in ipairs(silent) do
  local expiry = redis.call('ZSCORE', KEYS[16], owner)
  if not expiry or tonumber(expiry) <= now then
    dead[owner] = true
    any = true
  end
end
if not any then return out end
local left, moved = {}, 0
local leases = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #leases, 2 do
  local id = leases[i]
  local owner = redis.call('HGET', KEYS[14], id)
  if owner and dead[owner] then
    -- The lease's deadline less the lease: when it was taken or last renewed.
    if tonumber(leases[i + 1]) - lease > now - dead_after then
      left[owner] = true
    else
      redis.call('ZREM', KEYS[5], id)
      redis.call('HDEL', KEYS[10], id)
      redis.call('HDEL', KEYS[14], id)
      if redis.call('HEXISTS', KEYS[3], id) == 1 then
        redis.call('ZADD', KEYS[2], id, id)
        moved = moved + 1
      end
    end
  end
end
for owner in pairs(dead) do
  if not left[owner] then redis.call('ZREM', KEYS[15], owner) end
end
if moved > 0 then wake() end
return out
"""

# ARGV: owner, id...  Read only.  Returns the ids whose lease has not lapsed and that owner leased.
HELD = """
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local deadline = redis.call('ZSCORE', KEYS[5], id)
  if deadline and tonumber(deadline) > now and redis.call('HGET', KEYS[14], id) == ARGV[1] then
    out[#out + 1] = id
  end
end
return out
"""


class RedisOwners:
    """The Redis broker's `beat` and `held`, mixed into RedisBroker (they use its `_lua`, `_keys`, `_status_keys`)."""

    lease: float
    _lua: Lua
    _keys: list[str]
    _status_keys: list[str]

    def beat(self, owner: str, dead_after: float) -> bool:
        """Record `owner` alive now; release the leases of owners silent for `dead_after` seconds (one script)."""
        script = self.__dict__.get("_beat") or self.__dict__.setdefault("_beat", self._lua.script(COMMON + BEAT))
        args = [owner, max(1, round(dead_after * 1000)), max(1, round(self.lease * 1000))]
        with translate():
            return bool(script(keys=[*self._keys, self._status_keys[1]], args=args))

    def held(self, ids: Sequence[str], owner: str) -> list[str]:
        """Those of `ids` still leased by `owner`."""
        if not ids:
            return []
        script = self.__dict__.get("_held") or self.__dict__.setdefault("_held", self._lua.script(COMMON + HELD))
        with translate():
            return [i.decode() for i in script(keys=self._keys, args=[owner, *ids])]
