"""Dramatiq actors: RedisBroker on the broker database, default middleware, no retries.

W5 (BENCH_REDELIVERY set): the broker's heartbeat_timeout (default 60 s), after
which the messages of a worker that stopped beating are requeued, by the
maintenance that a broker command runs with maintenance_chance in a million
(default 1,000: an idle pair of workers then takes minutes to requeue them);
W5 gives it 100,000, so the requeue follows the timeout within a second or so.
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import jobs

_options = {}
if os.environ.get("BENCH_REDELIVERY"):
    _options["heartbeat_timeout"] = int(os.environ["BENCH_REDELIVERY"]) * 1000  # milliseconds
    _options["maintenance_chance"] = 100_000
dramatiq.set_broker(RedisBroker(url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12"), **_options))


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(i):
    jobs.noop(i)


@dramatiq.actor(queue_name="bench", max_retries=0)
def sleepy(i):
    jobs.sleepy(i)


@dramatiq.actor(queue_name="bench", max_retries=0)
def latency(enqueued):
    jobs.latency(enqueued)
