"""Celery app: Redis broker on the broker database, no result backend, defaults otherwise.

W5 (BENCH_REDELIVERY set): acks_late with that visibility timeout, so a task
whose worker was killed is delivered again, and kombu's scan for unacked
messages past it every second (by default every 10 s, and only every 10th
scan restores: about 100 s); by default Celery acks a task before it runs,
and its visibility timeout is an hour.
"""

import os

from celery import Celery

import jobs

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12"))
app.conf.task_default_queue = "bench"
app.conf.task_ignore_result = True
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("BENCH_REDELIVERY"):
    app.conf.task_acks_late = True
    app.conf.task_reject_on_worker_lost = True
    app.conf.broker_transport_options = {"visibility_timeout": int(os.environ["BENCH_REDELIVERY"]),
                                         "unacked_restore_interval": 1, "unacked_restore_throttle": 1}


@app.task(name="noop")
def noop(i):
    jobs.noop(i)


@app.task(name="sleepy")
def sleepy(i):
    jobs.sleepy(i)


@app.task(name="latency")
def latency(enqueued):
    jobs.latency(enqueued)
