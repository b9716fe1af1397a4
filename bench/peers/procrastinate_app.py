"""procrastinate app: its psycopg 3 connector on the bench's PostgreSQL database, defaults otherwise."""

import os

from procrastinate import App, PsycopgConnector

import jobs

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PG_DSN", "host=127.0.0.1 user=postgres "
                                                             "dbname=procrastinate_bench")))


@app.task(name="noop")
def noop(i):
    jobs.noop(i)


@app.task(name="sleepy")
def sleepy(i):
    jobs.sleepy(i)


@app.task(name="latency")
def latency(enqueued):
    jobs.latency(enqueued)
