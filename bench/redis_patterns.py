#!/usr/bin/env python3
"""Three reliable-queue patterns on Redis, measured the same way: lists + BLMOVE, Streams, our sorted sets + Lua.

    .venv/bin/python bench/redis_patterns.py [--rounds 5] [--quick] [--out FILE]

Uses (and FLUSHES) Redis db 12 on 127.0.0.1:6379. Each pattern is a minimal
but honest version of its hot path, one consumer, one connection:

- list: a ready LIST of message ids, bodies in a HASH; dequeue LMOVEs ids into
  the consumer's processing LIST (BLMOVE only when the ready list is empty),
  then HMGETs the bodies; the consumer refreshes a heartbeat key (SET PX) at
  most once a second; ack is LREM from the processing list + HDEL of the body.
  Recovery: a reaper finds consumers whose heartbeat expired and moves their
  processing lists back to ready; the live consumer then dequeues them.
- stream: XADD, XREADGROUP COUNT n, ack is XACK + XDEL (else the stream keeps
  every message). Recovery: XAUTOCLAIM with a min-idle time, 100 at a time.
- sorted-sets: django_q.brokers.redis.RedisBroker itself, from this checkout
  (enqueue, enqueue_many, dequeue(count), ack; recovery: lapsed leases go back
  to ready inside the next dequeue). It needs no Django settings.

Batches are pipelined (one round trip) where the pattern allows it. Rounds are
interleaved (list, stream, sorted-sets, list, ...); the table shows the median
and min-max of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from django_q.brokers.redis import RedisBroker  # noqa: E402  (needs no Django settings)

sys.path.insert(0, str(REPO / "bench"))
import guard  # noqa: E402
import lock  # noqa: E402

URL = "redis://127.0.0.1:6379/12"
BODY = 256  # bytes: about the size of a signed package of a call with a few arguments
BATCH = 100  # enqueue batch, and recovery batch
LEASE = 60.0  # seconds: long enough never to lapse during a drain

# What each pattern can do beyond at-least-once delivery, as built here or with a few more keys.
CAN = {
    "list": {
        "priorities": "no: one list per level, and BLMOVE takes one source (BLMPOP takes several but moves nowhere)",
        "delayed delivery": "no: needs a ZSET and a mover outside the list",
        "per-message lease renewal": "no: the heartbeat is per consumer, all its deliveries live or lapse together",
        "FIFO position kept on requeue": "no: a requeued id goes to either end of the ready list",
        "delivery count": "no: needs a HASH of attempts",
    },
    "stream": {
        "priorities": "no: one stream per level, XREADGROUP reads streams in the order given, not by priority",
        "delayed delivery": "no: an entry is readable as soon as it is added",
        "per-message lease renewal": "yes: XCLAIM to the same consumer (JUSTID) resets the idle time",
        "FIFO position kept on requeue": "no requeue: a pending entry keeps its id but comes back only through "
                                         "XCLAIM/XAUTOCLAIM after min-idle, never to '>' readers",
        "delivery count": "yes: XPENDING / XAUTOCLAIM count deliveries",
    },
    "sorted-sets": {
        "priorities": "yes: the score is (100 - priority) * 2**44 + seq",
        "delayed delivery": "yes: a delayed ZSET released inside dequeue, by the server's clock",
        "per-message lease renewal": "yes: renew(ids) moves each lease deadline",
        "FIFO position kept on requeue": "yes: the id is its score, ZADD ready id id puts it back in place",
        "delivery count": "yes: an attempts HASH, incremented in dequeue",
    },
}


class ListQueue:
    """Ready list of ids -> per-consumer processing list (LMOVE), bodies in a hash, a heartbeat per consumer."""

    name = "list"

    def __init__(self, client: redis.Redis, consumer: str = "c1") -> None:
        self.r = client
        self.consumer = consumer
        self.processing = f"list:processing:{consumer}"
        self.heartbeat = f"list:heartbeat:{consumer}"
        self.lease_ms = int(LEASE * 1000)
        self.beat_at = 0.0
        # Consumers register once, so the reaper knows whose processing lists to check.
        self.r.sadd("list:consumers", consumer)

    def enqueue(self, body: bytes) -> None:
        self.enqueue_many([body])

    def enqueue_many(self, bodies: list[bytes]) -> None:
        ids = [uuid.uuid4().hex for _ in bodies]
        pipe = self.r.pipeline(transaction=False)
        pipe.hset("list:bodies", mapping=dict(zip(ids, bodies)))
        pipe.lpush("list:ready", *ids)
        pipe.execute()

    def dequeue(self, count: int) -> list[tuple[bytes, bytes]]:
        """(id, body) pairs: LMOVE up to `count` ids (BLMOVE if none), then HMGET the bodies."""
        pipe = self.r.pipeline(transaction=False)
        now = time.monotonic()
        if now >= self.beat_at:
            pipe.set(self.heartbeat, 1, px=self.lease_ms)
            self.beat_at = now + 1.0
        for _ in range(count):
            pipe.lmove("list:ready", self.processing, "RIGHT", "LEFT")
        ids = [i for i in pipe.execute()[-count:] if i is not None]
        if not ids:
            got = self.r.blmove("list:ready", self.processing, 0.01, "RIGHT", "LEFT")
            if got is None:
                return []
            ids = [got]
        return list(zip(ids, self.r.hmget("list:bodies", ids)))

    def ack(self, ids: list[bytes]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.lrem(self.processing, 1, i)
        pipe.hdel("list:bodies", *ids)
        pipe.execute()

    def lapse(self) -> None:
        """Make this consumer look dead: its heartbeat expires."""
        self.r.delete(self.heartbeat)

    def recover(self) -> int:
        """Reaper: move the processing lists of consumers without a heartbeat back to ready (pipelined LMOVEs)."""
        moved = 0
        consumers = [c.decode() for c in self.r.smembers("list:consumers")]
        pipe = self.r.pipeline(transaction=False)
        for c in consumers:
            pipe.exists(f"list:heartbeat:{c}")
        alive = pipe.execute()
        for c, beat in zip(consumers, alive):
            if beat:
                continue
            source = f"list:processing:{c}"
            while True:
                pipe = self.r.pipeline(transaction=False)
                for _ in range(BATCH):
                    # Newest first onto the end dequeue pops, so the oldest is handed out first.
                    pipe.lmove(source, "list:ready", "LEFT", "RIGHT")
                got = sum(1 for v in pipe.execute() if v is not None)
                moved += got
                if got < BATCH:
                    break
        return moved


class StreamQueue:
    """One stream, one consumer group; ack is XACK + XDEL; recovery is XAUTOCLAIM."""

    name = "stream"
    key, group = "stream:q", "g"

    def __init__(self, client: redis.Redis, consumer: str = "c1") -> None:
        self.r = client
        self.consumer = consumer
        try:
            self.r.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def enqueue(self, body: bytes) -> None:
        self.r.xadd(self.key, {"b": body})

    def enqueue_many(self, bodies: list[bytes]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for body in bodies:
            pipe.xadd(self.key, {"b": body})
        pipe.execute()

    def dequeue(self, count: int) -> list[tuple[bytes, bytes]]:
        reply = self.r.xreadgroup(self.group, self.consumer, {self.key: ">"}, count=count)
        if not reply:
            return []
        return [(mid, fields[b"b"]) for mid, fields in reply[0][1]]

    def ack(self, ids: list[bytes]) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.xack(self.key, self.group, *ids)
        pipe.xdel(self.key, *ids)
        pipe.execute()

    def lapse(self) -> None:
        """Pending entries become claimable once idle for min-idle (1 ms here)."""

    def recover(self) -> int:
        """XAUTOCLAIM everything idle over 1 ms to this consumer, BATCH at a time: the deliveries themselves."""
        claimed, cursor = 0, "0-0"
        while True:
            reply = self.r.xautoclaim(self.key, self.group, self.consumer, min_idle_time=1, start_id=cursor,
                                      count=BATCH)
            cursor, entries = reply[0], reply[1]
            claimed += len(entries)
            if cursor in (b"0-0", "0-0"):
                return claimed


class SortedSetQueue:
    """This project's RedisBroker, as the cluster uses it."""

    name = "sorted-sets"

    def __init__(self, client: redis.Redis, consumer: str = "c1", lease: float = LEASE) -> None:
        self.broker = RedisBroker("patterns", lease, URL)

    def enqueue(self, body: bytes) -> None:
        self.broker.enqueue(body)

    def enqueue_many(self, bodies: list[bytes]) -> None:
        self.broker.enqueue_many(bodies)

    def dequeue(self, count: int) -> list[tuple[str, bytes]]:
        return [(d.id, d.payload) for d in self.broker.dequeue(count)]

    def ack(self, ids: list[str]) -> None:
        self.broker.ack(ids)

    def lapse(self) -> None:
        """The dead consumer's leases were 1 ms long (see recovery())."""

    def recover(self) -> int:
        """Lapsed leases go back to ready inside dequeue, which hands them out: dequeue BATCH until none."""
        got = 0
        while True:
            batch = self.broker.dequeue(BATCH)
            got += len(batch)
            if len(batch) < BATCH:
                return got


PATTERNS = (ListQueue, StreamQueue, SortedSetQueue)


def bodies(n: int) -> list[bytes]:
    return [os.urandom(BODY) for _ in range(n)]


def enqueue_single(client: redis.Redis, pattern: type, n: int) -> float:
    q, data = pattern(client), bodies(n)
    t0 = time.perf_counter()
    for body in data:
        q.enqueue(body)
    return n / (time.perf_counter() - t0)


def enqueue_batched(client: redis.Redis, pattern: type, n: int) -> float:
    q, data = pattern(client), bodies(n)
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        q.enqueue_many(data[start : start + BATCH])
    return n / (time.perf_counter() - t0)


def drain(client: redis.Redis, pattern: type, n: int, count: int) -> float:
    """Dequeue `count` and ack them, until all n are done; messages/s."""
    q = pattern(client)
    data = bodies(n)
    for start in range(0, n, 1000):
        q.enqueue_many(data[start : start + 1000])
    done = 0
    t0 = time.perf_counter()
    while done < n:
        got = q.dequeue(count)
        if not got:
            raise RuntimeError(f"{pattern.name}: queue empty after {done} of {n}")
        q.ack([i for i, _ in got])
        done += len(got)
    return n / (time.perf_counter() - t0)


def recovery(client: redis.Redis, pattern: type, n: int) -> float:
    """A consumer takes n deliveries and dies; ms until a live consumer holds all n again."""
    if pattern is SortedSetQueue:
        dead = SortedSetQueue(client, lease=0.001)
    else:
        dead = pattern(client, consumer="dead")
    data = bodies(n)
    for start in range(0, n, 1000):
        dead.enqueue_many(data[start : start + 1000])
    taken = 0
    while taken < n:  # in one call where the pattern allows: a 1 ms lease must not lapse in between
        taken += len(dead.dequeue(n - taken))
    dead.lapse()
    time.sleep(0.02)  # past the 1 ms lease / min-idle
    live = pattern(client, consumer="live")
    t0 = time.perf_counter()
    got = live.recover()
    if pattern is ListQueue:
        while got < 2 * n:  # the reaper's moves, then the deliveries
            batch = live.dequeue(BATCH)
            if not batch:
                break
            got += len(batch)
        got -= n
    elapsed = time.perf_counter() - t0
    if got != n:
        raise RuntimeError(f"{pattern.name}: recovered {got} of {n}")
    return elapsed * 1000


def measures(quick: bool) -> list[tuple[str, str, Callable[[redis.Redis, type], float]]]:
    k = 5 if quick else 1
    single, batched, drained, lapsed = 5000 // k, 20000 // k, 10000 // k, 1000
    return [
        ("enqueue, single calls", "msg/s", lambda c, p: enqueue_single(c, p, single)),
        (f"enqueue, batches of {BATCH}", "msg/s", lambda c, p: enqueue_batched(c, p, batched)),
        ("dequeue+ack, batch 1", "msg/s", lambda c, p: drain(c, p, drained // 2, 1)),
        ("dequeue+ack, batch 10", "msg/s", lambda c, p: drain(c, p, drained, 10)),
        (f"recover {lapsed} lapsed deliveries", "ms", lambda c, p: recovery(c, p, lapsed)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a fifth of the messages, 3 rounds")
    parser.add_argument("--out", default="/tmp/redis_patterns.json")
    opts = parser.parse_args()
    lock.acquire()  # it flushes db 12, which bench runs use: held until this process ends
    rounds = 3 if opts.quick and opts.rounds == 5 else opts.rounds
    client = guard.redis_client(URL)
    guard.check_redis(client, {12})  # a stray consumer of db 12 would take the patterns' messages
    plan = measures(opts.quick)
    runs: dict[str, dict[str, list[float]]] = {m: {p.name: [] for p in PATTERNS} for m, _, _ in plan}
    started = time.monotonic()
    for r in range(rounds):
        for title, _, measure in plan:
            for pattern in PATTERNS:  # interleaved: every pattern, then the next measure
                client.flushdb()
                runs[title][pattern.name].append(measure(client, pattern))
        print(f"round {r + 1}/{rounds} done, {time.monotonic() - started:.0f} s", flush=True)
    client.flushdb()

    names = [p.name for p in PATTERNS]
    print(f"\n{'measure':<34}" + "".join(f"{n:>26}" for n in names))
    print("-" * (34 + 26 * len(names)))
    summary: dict = {}
    for title, unit, _ in plan:
        cells, summary[title] = [], {"unit": unit}
        for name in names:
            v = runs[title][name]
            med = statistics.median(v)
            summary[title][name] = {"median": med, "min": min(v), "max": max(v), "runs": v}
            cells.append(f"{fmt(med)} ({fmt(min(v))}-{fmt(max(v))})")
        print(f"{title + ' (' + unit + ')':<34}" + "".join(f"{c:>26}" for c in cells))
    print(f"median (min-max) of {rounds} interleaved rounds; one consumer, one connection, {BODY}-byte bodies")
    # Other work on the machine moves every figure of a round together: the
    # ratio within a round is steadier than the figures.
    print(f"\n{'vs sorted-sets, median of rounds':<34}" + "".join(f"{n:>26}" for n in names))
    for title, unit, _ in plan:
        ours = runs[title][SortedSetQueue.name]
        cells = []
        for name in names:
            ratios = [v / o for v, o in zip(runs[title][name], ours)]
            if unit == "ms":
                ratios = [1 / x for x in ratios]  # so that above 1 always means faster than ours
            summary[title][name]["speed_vs_sorted_sets"] = statistics.median(ratios)
            cells.append(f"{statistics.median(ratios):.2f}x")
        print(f"{title:<34}" + "".join(f"{c:>26}" for c in cells))
    print("above 1: faster than sorted-sets (recovery: ours' time divided by the pattern's)")
    print()
    for cap in CAN["list"]:
        print(f"{cap}:")
        for name in names:
            print(f"    {name:<12} {CAN[name][cap]}")
    info = client.info("server")
    doc = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "bench/redis_patterns.py", *sys.argv[1:]]),
            "commit": git("rev-parse", "HEAD"),
            # The broker measured is the working tree's django_q/brokers/redis.py.
            "broker_dirty": bool(git("status", "--porcelain", "--", "django_q/brokers/redis.py")),
            "broker_file": sys.modules[RedisBroker.__module__].__file__,
            "redis": info.get("redis_version"),
            "redis-py": redis.__version__,
            "python": sys.version.split()[0],
            "rounds": rounds,
            "body_bytes": BODY,
            "loadavg": list(os.getloadavg()),
        },
        "figures": summary,
        "capabilities": CAN,
    }
    Path(opts.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nfigures written to {opts.out}")
    return 0


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
