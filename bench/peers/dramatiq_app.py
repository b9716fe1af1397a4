"""Dramatiq actors: RedisBroker on the broker database, default middleware, no retries."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import jobs

dramatiq.set_broker(RedisBroker(url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")))


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(i):
    jobs.noop(i)


@dramatiq.actor(queue_name="bench", max_retries=0)
def sleepy(i):
    jobs.sleepy(i)


@dramatiq.actor(queue_name="bench", max_retries=0)
def latency(enqueued):
    jobs.latency(enqueued)
