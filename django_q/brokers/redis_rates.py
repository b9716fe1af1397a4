"""The Redis broker's rate limits (the Throttle contract) and `defer`: their scripts and arguments.

Keys, for queue `name` (in the queue's hash slot, beside those of
django_q.brokers.redis):

    django_q:{name}:rate:<key>   ZSET    one member per start -> its time, µs of the server's clock;
                                         the last `count` starts within the window; expires with it
    django_q:{name}:rate_seq     STRING  INCR counter: the members, so two starts in one µs stay two
    django_q:{name}:rates        SET     the rate keys above, for purge
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..rates import Limit

# KEYS: rate_seq, rates, then the logs of the keys in ARGV order.
# ARGV: m (logs), then count and window µs of each log, then each start: c, then c indices (1..m) of its logs.
# Returns per start 0 (taken) or the µs until all its logs have room.
TAKE_STARTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local m = tonumber(ARGV[1])
local counts, windows, sizes = {}, {}, {}
for i = 1, m do
  counts[i] = tonumber(ARGV[2 * i])
  windows[i] = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 2], '-inf', now - windows[i])
  sizes[i] = redis.call('ZCARD', KEYS[i + 2])
end
local out = {}
local pos = 2 * m + 2
while pos <= #ARGV do
  local c = tonumber(ARGV[pos])
  local wait = 0
  for j = 1, c do
    local i = tonumber(ARGV[pos + j])
    if sizes[i] >= counts[i] then
      local nth = redis.call('ZRANGE', KEYS[i + 2], -counts[i], -counts[i], 'WITHSCORES')
      local left = tonumber(nth[2]) + windows[i] - now
      if left > wait then wait = left end
    end
  end
  if wait == 0 then
    for j = 1, c do
      local i = tonumber(ARGV[pos + j])
      redis.call('ZADD', KEYS[i + 2], now, redis.call('INCR', KEYS[1]))
      sizes[i] = sizes[i] + 1
    end
  end
  out[#out + 1] = wait
  pos = pos + c + 1
end
for i = 1, m do
  if sizes[i] > counts[i] then redis.call('ZREMRANGEBYRANK', KEYS[i + 2], 0, sizes[i] - counts[i] - 1) end
  redis.call('PEXPIRE', KEYS[i + 2], math.ceil(windows[i] / 1000))
  redis.call('SADD', KEYS[2], KEYS[i + 2])
end
return out
"""

# With COMMON, on the queue's keys.  ARGV: id, delay ms, id, delay ms...  A
# leased message goes to delayed (or ready), keeping its place, its dequeue's
# attempt taken back.
DEFER = """
local now = now_ms()
local moved = 0
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[5], id) == 1 and redis.call('HEXISTS', KEYS[3], id) == 1 then
    redis.call('HDEL', KEYS[10], id)
    redis.call('HDEL', KEYS[14], id)
    if redis.call('HINCRBY', KEYS[4], id, -1) < 0 then redis.call('HSET', KEYS[4], id, 0) end
    local delay = tonumber(ARGV[i + 1])
    if delay > 0 then redis.call('ZADD', KEYS[6], now + delay, id) else redis.call('ZADD', KEYS[2], id, id) end
    moved = moved + 1
  end
end
-- Delayed ones too: a blocked consumer shortens its wait to their due time.
if moved > 0 then wake() end
"""


def rate_keys(name: str) -> list[str]:
    """The fixed keys of TAKE_STARTS: rate_seq and rates."""
    return [f"django_q:{{{name}}}:rate_seq", f"django_q:{{{name}}}:rates"]


def take_call(
    name: str, wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]
) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of TAKE_STARTS for these starts."""
    index: dict[str, int] = {}
    for keys in wanted:
        for key in keys:
            index.setdefault(key, len(index) + 1)
    args: list[Any] = [len(index)]
    for key in index:
        args += (limits[key].count, round(limits[key].window * 1_000_000))
    for keys in wanted:
        args += (len(keys), *(index[key] for key in keys))
    return [*rate_keys(name), *(f"django_q:{{{name}}}:rate:{key}" for key in index)], args


def defer_args(delays: Mapping[str, float]) -> list[Any]:
    """The ARGV of DEFER."""
    return [v for delivery_id, delay in delays.items() for v in (delivery_id, max(0, round(delay * 1000)))]
