"""SAQ worker settings: its Redis queue on the broker database, defaults otherwise (10 jobs at once a process).

The task bodies are plain functions: SAQ runs them in its thread pool. W5
(BENCH_REDELIVERY set) gives each job that timeout and one retry, and sweeps
stuck jobs that often; SAQ's defaults are timeout 10 s, retries 1 (no second
attempt) and a sweep every 60 s.
"""

import os

from saq import Queue

import jobs

queue = Queue.from_url(os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12"), name="bench")
REDELIVERY = int(os.environ["BENCH_REDELIVERY"]) if os.environ.get("BENCH_REDELIVERY") else None


def job_options() -> dict:
    """Keyword arguments of every enqueue call."""
    return {"timeout": REDELIVERY, "retries": 2} if REDELIVERY else {}


def noop(ctx, *, i):
    jobs.noop(i)


def sleepy(ctx, *, i):
    jobs.sleepy(i)


def latency(ctx, *, enqueued):
    jobs.latency(enqueued)


settings = {"queue": queue, "functions": [noop, sleepy, latency]}
if REDELIVERY:
    settings["timers"] = {"sweep": REDELIVERY}
