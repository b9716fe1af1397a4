"""The floors under two targets of issue #21: what no Django Q change can take off.

    .venv/bin/python bench/floors.py [--repeats 15] [--tasks 300]

1. Django's own start. `manage.py qcluster` first imports Django's management
   package and runs `django.setup()` with the project's settings; only then
   does our command run. Spawned in ours' venv with the bench project's
   settings (Redis broker, results in SQLite), timed from the spawn until the
   child reports that step done, then again with `import redis` after it (what
   any Redis consumer loads; the bench's task bodies import it too). The first
   task of a cluster cannot come sooner than that.
2. The pick-up floor on PostgreSQL, W3's path with nothing of ours in it: one
   process INSERTs a row carrying `time.time()` and sends `pg_notify` in the
   same statement, committing durably (autocommit, like an `async_task` outside
   a transaction); a second process LISTENs, and on each notice claims the row
   (UPDATE ... FOR UPDATE SKIP LOCKED RETURNING, `synchronous_commit` off)
   and takes `time.time()`. Plain psycopg, no Django, no hop to a worker: a
   queue on PostgreSQL that wakes by NOTIFY cannot start a task sooner.
   W3's target on the database broker is a fifth of procrastinate's p50.

Runs, like idle_cpu.py, in the project's venv (psycopg); spawns
bench/.venvs/django-q (made or brought up to date first); holds the bench lock, and a PostgreSQL database of its own,
`dq_bench_floor`, dropped at the end. Prints medians and min-max, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lock  # noqa: E402
import venvs  # noqa: E402
from systems import BENCH, OURS, Target  # noqa: E402

FLOOR_DB = "dq_bench_floor"
CHANNEL = "dq_floor"
GAP = 0.02  # seconds between two inserts, as in W3
SETUP = "import django.core.management, django; django.setup()"
CHILD = """
import os, sys
{steps}
os.write(1, b"r")
sys.stdin.read()
"""


def start_ms(python: str, env: dict[str, str], steps: str) -> float:
    """Milliseconds from spawning `python` until it has run `steps` (it says so on stdout, then waits)."""
    t0 = time.monotonic()
    child = subprocess.Popen([python, "-c", CHILD.format(steps=steps)], env=env, cwd=BENCH,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if child.stdout.read(1) != b"r":  # type: ignore[union-attr]
            raise RuntimeError(f"the child exited {child.wait(timeout=10)} before it was ready")
        return (time.monotonic() - t0) * 1000
    finally:
        child.kill()
        child.wait(timeout=10)


LISTENER = """
import json, sys, time
import psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute("LISTEN {channel}")
claim = ("UPDATE floor_q SET leased = true WHERE id IN (SELECT id FROM floor_q WHERE NOT leased "
         "ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING t, set_config('synchronous_commit', 'off', true)")
print("ready", flush=True)
waits, deadline = [], time.monotonic() + float(sys.argv[3])
while len(waits) < int(sys.argv[2]) and time.monotonic() < deadline:
    if not list(conn.notifies(timeout=0.2, stop_after=1)):
        continue
    for (t, _) in conn.execute(claim).fetchall():
        waits.append((time.time() - t) * 1000)
print(json.dumps(waits), flush=True)
"""


def pg_pickup(python: str, tasks: int) -> list[float]:
    """Milliseconds from before a durable INSERT + NOTIFY to the claim by a LISTENing process, per row."""
    import psycopg

    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {FLOOR_DB}")
    admin.execute(f"CREATE DATABASE {FLOOR_DB}")
    dsn = f"host=127.0.0.1 user=postgres dbname={FLOOR_DB}"
    listener = None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE floor_q (id bigserial PRIMARY KEY, t double precision, leased bool DEFAULT false)")
            listener = subprocess.Popen([python, "-c", LISTENER.format(channel=CHANNEL), dsn, str(tasks), "60"],
                                        stdout=subprocess.PIPE, text=True)
            if listener.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise RuntimeError("the listener did not start")
            insert = f"WITH row AS (INSERT INTO floor_q (t) VALUES (%s) RETURNING id) SELECT pg_notify('{CHANNEL}', '') FROM row"
            for _ in range(tasks):
                conn.execute(insert, [time.time()])
                time.sleep(GAP)
            out, _ = listener.communicate(timeout=70)
        return json.loads(out.strip().splitlines()[-1])
    finally:
        if listener is not None and listener.poll() is None:
            listener.kill()
            listener.wait(timeout=10)
        admin.execute(f"DROP DATABASE IF EXISTS {FLOOR_DB} WITH (FORCE)")
        admin.close()


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 2), "p90": round(values[int(len(values) * 0.9)], 2),
            "min": round(values[0], 2), "max": round(values[-1], 2), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15, help="spawns of each start (default 15)")
    parser.add_argument("--tasks", type=int, default=300, help="rows of the PostgreSQL pick-up (default 300)")
    opts = parser.parse_args()
    lock.acquire()  # held until this process ends
    venvs.ensure(OURS)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="django_q_floor-") as scratch:
        env = Target(OURS).env(Path(scratch))
        ours = str(venvs.python(OURS))
        for name, steps in (("django_start_ms", SETUP), ("django_start_redis_ms", f"{SETUP}; import redis")):
            results[name] = summary([start_ms(ours, env, steps) for _ in range(opts.repeats)])
    results["pg_pickup_ms"] = summary(pg_pickup(sys.executable, opts.tasks))
    labels = {
        "django_start_ms": "Django's start (import management, django.setup()), ms",
        "django_start_redis_ms": "  the same, then import redis, ms",
        "pg_pickup_ms": "PostgreSQL pick-up floor (durable INSERT+NOTIFY -> LISTEN -> claim), ms",
    }
    for name, label in labels.items():
        r = results[name]
        print(f"{label:75} {r['p50']:8.2f}  ({r['min']:.2f} - {r['max']:.2f}, p90 {r['p90']:.2f}, n={r['n']})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
