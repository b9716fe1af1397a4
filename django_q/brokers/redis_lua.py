"""The Redis broker's Lua scripts (redis_calls runs them).

Every script gets the keys in `redis.KEY_NAMES` order (the key layout is in
the docstring of django_q.brokers.redis); each move of a message between the
sorted sets is one script, so it is atomic, with `TIME` as the one clock
every cluster shares.
"""

from __future__ import annotations

# Enough tokens to wake every consumer of a busy queue; more would only be
# popped and found stale.
WAKE_CAP = 64
# Scripts move at most this many due or lapsed ids per call, so one call never
# blocks the server for long; the next call moves the rest.
RELEASE_BATCH = 1000
# Most arguments a script hands one command from a table: Lua's unpack() fails far beyond.
UNPACK_BATCH = 1000

# Every script gets the keys in KEY_NAMES order: KEYS[1] seq ... KEYS[7] wake ... KEYS[11] cancel,
# KEYS[12] unique, KEYS[13] unique_of, KEYS[14] owner, KEYS[15] beats (ENQUEUE only the first 9).
# Every `local function` of a prelude is made again at each call: the enqueue
# scripts (async_task's one round trip) carry only the two helpers they use.
CLOCK = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

CLOCK_AND_WAKE = CLOCK + f"""-- A token for a blocked consumer; the list is trimmed only once it outgrows the cap.
local function wake()
  if redis.call('LPUSH', KEYS[7], 1) > {WAKE_CAP} then redis.call('LTRIM', KEYS[7], 0, {WAKE_CAP - 1}) end
end
"""

# The enqueues' own wake(): while no consumer pops the tokens (tasks sent
# before the cluster starts, or faster than it takes them), the list stays
# past the cap, and trimming it back at every call cost each enqueue a command
# more (a tenth of its time on the server). Trimmed back to the cap once past
# twice the cap, it costs one call in WAKE_CAP; a dequeue that passes the baton
# trims it to the cap anyway.
ENQUEUE_PRELUDE = CLOCK + f"""local function wake()
  if redis.call('LPUSH', KEYS[7], 1) > {2 * WAKE_CAP} then redis.call('LTRIM', KEYS[7], 0, {WAKE_CAP - 1}) end
end
"""

COMMON = CLOCK_AND_WAKE + f"""
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
-- Forget everything kept about each of ids but its place in the sorted sets: one
-- variadic command per hash for the batch (a command per id cost several times
-- its work in Lua calls), at most UNPACK_BATCH ids to a command.
local function forget(ids)
  for first = 1, #ids, {UNPACK_BATCH} do
    local some = {{unpack(ids, first, math.min(#ids, first + {UNPACK_BATCH} - 1))}}
    for _, hash in ipairs({{KEYS[3], KEYS[4], KEYS[10], KEYS[14]}}) do redis.call('HDEL', hash, unpack(some)) end
    redis.call('SREM', KEYS[11], unpack(some))
    -- The task key and the unique key of each, released where this id still holds them.
    for _, pair in ipairs({{{{KEYS[9], KEYS[8]}}, {{KEYS[13], KEYS[12]}}}}) do
      local keys = redis.call('HMGET', pair[1], unpack(some))
      local owned, holders = {{}}, {{}}
      for i, key in ipairs(keys) do
        if key then owned[#owned + 1] = some[i]; holders[#holders + 1] = key end
      end
      if #owned > 0 then
        local held = redis.call('HMGET', pair[2], unpack(holders))
        local released = {{}}
        for i, key in ipairs(holders) do
          if held[i] == owned[i] then released[#released + 1] = key end
        end
        if #released > 0 then redis.call('HDEL', pair[2], unpack(released)) end
        redis.call('HDEL', pair[1], unpack(owned))
      end
    end
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

# KEYS: the first ENQUEUE_KEYS of KEY_NAMES (each key a call sends costs the server a
# string). ARGV: priority base, delay ms, payload, key, payload, key...  (key '' for
# none). Returns the new ids; one message (async_task): its id, not a list. Each hash and sorted set gets one command for the whole
# batch (a command per message costs several times its work in Lua calls).
ENQUEUE = ENQUEUE_PRELUDE + """
local base = tonumber(ARGV[1])
local delay = tonumber(ARGV[2])
local due = nil
if delay > 0 then due = now_ms() + delay end
if #ARGV == 4 then  -- one message (async_task): the same commands, without the tables
  local id = string.format('%d', base + redis.call('INCR', KEYS[1]))
  redis.call('HSET', KEYS[3], id, ARGV[3])
  if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[8], ARGV[4], id)
    redis.call('HSET', KEYS[9], id, ARGV[4])
  end
  redis.call('ZADD', due and KEYS[6] or KEYS[2], due or id, id)
  wake()
  return id
end
local n = (#ARGV - 2) / 2
local first = redis.call('INCRBY', KEYS[1], n) - n
-- Field-value lists: payloads by id, ids by key, keys by id, and the sorted set's score-member pairs.
local ids, bodies, id_of, key_of, places = {}, {}, {}, {}, {}
for i = 1, n do
  local id = string.format('%d', base + first + i)
  ids[i] = id
  bodies[2 * i - 1] = id
  bodies[2 * i] = ARGV[2 * i + 1]
  places[2 * i - 1] = due or id
  places[2 * i] = id
  local key = ARGV[2 * i + 2]
  if key ~= '' then
    id_of[#id_of + 1] = key
    id_of[#id_of + 1] = id
    key_of[#key_of + 1] = id
    key_of[#key_of + 1] = key
  end
end
redis.call('HSET', KEYS[3], unpack(bodies))
if #id_of > 0 then
  redis.call('HSET', KEYS[8], unpack(id_of))
  redis.call('HSET', KEYS[9], unpack(key_of))
end
redis.call('ZADD', due and KEYS[6] or KEYS[2], unpack(places))
-- A delayed message wakes consumers too, so that they shorten their wait to its due time.
wake()
return ids
"""

# ARGV: priority base, delay ms, payload, key, unique.  Adds the message unless
# the message holding `unique` is still here; returns the key of the holder
# (ARGV[4] when this one was added).  A holder whose package is gone (its keys
# were deleted by hand) holds nothing: a key can only be held by a message.
ENQUEUE_UNIQUE = ENQUEUE_PRELUDE + """
local holder = redis.call('HGET', KEYS[12], ARGV[5])
if holder and redis.call('HEXISTS', KEYS[3], holder) == 1 then
  return redis.call('HGET', KEYS[9], holder) or ''
end
if holder then redis.call('HDEL', KEYS[13], holder) end
local id = string.format('%d', tonumber(ARGV[1]) + redis.call('INCR', KEYS[1]))
local delay = tonumber(ARGV[2])
redis.call('HSET', KEYS[3], id, ARGV[3])
redis.call('HSET', KEYS[8], ARGV[4], id)
redis.call('HSET', KEYS[9], id, ARGV[4])
redis.call('HSET', KEYS[12], ARGV[5], id)
redis.call('HSET', KEYS[13], id, ARGV[5])
if delay > 0 then
  redis.call('ZADD', KEYS[6], now_ms() + delay, id)
else
  redis.call('ZADD', KEYS[2], id, id)
end
wake()
return ARGV[4]
"""

# ARGV: count, lease ms, owner ('' for none).  Returns {hint ms, id, payload,
# attempts, id, ...}; hint is how long until a delayed message is due or a lease
# lapses (-1: never).
DEQUEUE = f"""
local count = tonumber(ARGV[1])
local owner = ARGV[3] or ''
local now = now_ms()
release(KEYS[6], now)
release(KEYS[5], now)
local out = {{-1}}
local got = 0
local deadline = now + tonumber(ARGV[2])
while got < count do
  local popped = redis.call('ZPOPMIN', KEYS[2], math.min(count - got, {UNPACK_BATCH}))
  if #popped == 0 then break end
  local ids = {{}}
  for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
  -- One command per hash and sorted set for the batch, as in forget().
  local bodies = redis.call('HMGET', KEYS[3], unpack(ids))
  local held, found, leases, owners = {{}}, {{}}, {{}}, {{}}
  for i, id in ipairs(ids) do
    if bodies[i] then
      held[#held + 1] = id
      found[#held] = bodies[i]
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      owners[#owners + 1] = id
      owners[#owners + 1] = owner
    end
  end
  if #held > 0 then
    redis.call('ZADD', KEYS[5], unpack(leases))
    if owner ~= '' then redis.call('HSET', KEYS[14], unpack(owners)) else redis.call('HDEL', KEYS[14], unpack(held)) end
    local counts = redis.call('HMGET', KEYS[4], unpack(held))
    local attempts = {{}}
    for i, id in ipairs(held) do
      local n = tonumber(counts[i] or '0') + 1
      attempts[2 * i - 1] = id
      attempts[2 * i] = n
      out[#out + 1] = id
      out[#out + 1] = found[i]
      out[#out + 1] = n
    end
    redis.call('HSET', KEYS[4], unpack(attempts))
    got = got + #held
  end
end
-- An owner that leases before its first beat is known from now on, as never seen (BEAT, redis_owners.py).
if got > 0 and owner ~= '' then redis.call('ZADD', KEYS[15], 'NX', 0, owner) end
-- Pass the baton: another blocked consumer can take what this one left.
if redis.call('ZCARD', KEYS[2]) > 0 then wake() end
for _, key in ipairs({{KEYS[6], KEYS[5]}}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = tonumber(first[2]) - now
    if out[1] < 0 or wait < out[1] then out[1] = wait end
  end
end
return out
"""

# ARGV: lease ms, id...  XX: an id that is not leased stays unleased.
RENEW = """
local deadline = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[5], 'XX', deadline, ARGV[i]) end
"""

ACK = """
local gone = {}
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[5], id) == 1 then gone[#gone + 1] = id end
end
forget(gone)
"""

REQUEUE = """
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
RETRY = """
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
MARK_RUNNING = """
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[5], ARGV[i]) then redis.call('HSET', KEYS[10], ARGV[i], ARGV[i + 1]) end
end
"""

# ARGV: key.  Read only.  Returns describe() of the message, or an empty list.
LOOKUP = """
local id = redis.call('HGET', KEYS[8], ARGV[1])
if not id then return {} end
return describe(id, now_ms()) or {}
"""

# ARGV: key.  Removes a message that is not leased; flags a leased one.
# Returns {outcome, describe()...}, or an empty list.
CANCEL = """
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
forget({id})
return {'removed', unpack(found)}
"""

# ARGV: limit.  Read only.  Returns describe() of each, flattened: leased, ready, delayed.
PENDING = """
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
COUNTS = """
local now = now_ms()
local due = redis.call('ZCOUNT', KEYS[6], '-inf', now)
local lapsed = redis.call('ZCOUNT', KEYS[5], '-inf', now)
local leased = redis.call('ZCARD', KEYS[5]) - lapsed
return {redis.call('ZCARD', KEYS[2]) + due + lapsed, leased}
"""


# The status keys expire with their last entry, so a queue whose clusters all
# died leaves nothing behind.  KEYS: status, status_expiry.  ARGV: id, data, ttl ms.
PUBLISH_STATUS = """
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
STATUSES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""
