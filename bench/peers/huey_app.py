"""Huey app: RedisHuey on the broker database, defaults otherwise (blocking reads, results kept)."""

import os

from huey import RedisHuey

import jobs

huey = RedisHuey("bench", url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12"))


@huey.task()
def noop(i):
    jobs.noop(i)


@huey.task()
def sleepy(i):
    jobs.sleepy(i)


@huey.task()
def latency(enqueued):
    jobs.latency(enqueued)
