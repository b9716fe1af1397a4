"""The task bodies every system runs, as plain functions (Django Q, django-q2 and RQ call them by path).

Each process keeps one Redis connection to the counter database (db 15), made
on first use and made again after a fork, so a task costs one round trip.

Counter keys, all in db 15:

    bench:done      INCR once per run of any task (W2, W2b, W5, W6 progress)
    bench:lat       LIST of start - enqueue, seconds (W3)
    bench:w5:<i>    INCR by the W5 task number i (runs of that task)
"""

from __future__ import annotations

import os
import time

import redis

COUNTER_URL = os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/15")

_conn: redis.Redis | None = None
_pid: int | None = None


def counter() -> redis.Redis:
    """This process's connection to the counter database."""
    global _conn, _pid
    if _conn is None or _pid != os.getpid():
        _conn = redis.Redis.from_url(COUNTER_URL)
        _pid = os.getpid()
    return _conn


def noop(i: int) -> None:
    """W1, W2, W2b, W6: count one run."""
    counter().incr("bench:done")


def sleepy(i: int) -> None:
    """W5: sleep 5 ms, then count a run of task i and one run overall, in one round trip."""
    time.sleep(0.005)
    pipe = counter().pipeline(transaction=False)
    pipe.incr(f"bench:w5:{i}")
    pipe.incr("bench:done")
    pipe.execute()


def latency(enqueued: float) -> None:
    """W3: record how long the task waited between enqueue and start, seconds."""
    started = time.time()
    counter().rpush("bench:lat", started - enqueued)


def limited(i: int) -> None:
    """The rate-limited function of bench/rate_limits.py: count one run apart from bench:done."""
    counter().incr("bench:limited")
