"""W2 beside a rate limit: how fast an unlimited function drains while a rate-limited one waits in its queue.

Django Q only, on Redis with results in SQLite, 2 workers, as W2 of
shared/BENCH.md; the queue in db 10 and the counters in db 11, both flushed
(not run.py's 12 and 15, so that the two can run at once). Three runs per
repeat, interleaved:

    plain   N tasks of jobs.noop, no rate_limits
    set     the same, with rate_limits naming jobs.limited (nothing queued is limited: the setting's own cost)
    beside  N tasks of jobs.noop and M of jobs.limited ("10/s"), enqueued in alternating blocks of 100

The figure is noop tasks/s from the start of the cluster to the N-th noop
run (the limited ones go on after it; they are not waited for).

    .venv/bin/python bench/rate_limits.py --quick        # N = M = 1,000, 1 repeat
    .venv/bin/python bench/rate_limits.py --n 10000 --repeats 3 --out /tmp/rate.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from procs import Group  # noqa: E402

BROKER_URL = "redis://127.0.0.1:6379/10"
COUNTER_URL = "redis://127.0.0.1:6379/11"
LIMIT = {"jobs.limited": "10/s"}
BLOCK = 100
DEADLINE = 120.0  # seconds a drain may take before the run is given up


def setup(scratch: Path) -> None:
    """This process as the driver: Django on the bench settings, the SQLite file migrated."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="djproject.settings.djq", BENCH_BROKER="redis", BENCH_BROKER_URL=BROKER_URL,
        BENCH_COUNTER_URL=COUNTER_URL, BENCH_DB="sqlite", BENCH_SQLITE=str(scratch / "rate.sqlite3"),
        TMPDIR=str(scratch),
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def enqueue(n: int, limited: int) -> None:
    """N noop tasks, and `limited` jobs.limited tasks in alternating blocks of BLOCK, limited first."""
    from django_q.tasks import async_many

    done = {"jobs.noop": 0, "jobs.limited": 0}
    wanted = {"jobs.noop": n, "jobs.limited": limited}
    while done != wanted:
        for func in ("jobs.limited", "jobs.noop"):
            count = min(BLOCK, wanted[func] - done[func])
            if count:
                async_many(func, range(done[func], done[func] + count))
                done[func] += count


def run(variant: str, n: int, limited: int, scratch: Path) -> dict:
    """One drain; noop tasks/s from the cluster's start to the n-th noop run."""
    for url in (BROKER_URL, COUNTER_URL):
        redis.Redis.from_url(url).flushdb()
    enqueue(n, limited if variant == "beside" else 0)
    env = {k: v for k, v in os.environ.items() if k != "BENCH_RATE_LIMITS"}
    env.update(PYTHONPATH=str(BENCH), PYTHONDONTWRITEBYTECODE="1")
    if variant != "plain":
        env["BENCH_RATE_LIMITS"] = json.dumps(LIMIT)
    counter = redis.Redis.from_url(COUNTER_URL)
    group = Group([sys.executable, "-m", "django", "qcluster"], env, BENCH, scratch / f"{variant}.log")
    t0 = time.monotonic()
    try:
        while int(counter.get("bench:done") or 0) < n:
            if time.monotonic() - t0 > DEADLINE or not group.alive():
                raise RuntimeError(f"{variant}: the drain did not finish:\n{group.tail()}")
            time.sleep(0.005)
        seconds = time.monotonic() - t0
        ran_limited = int(counter.get("bench:limited") or 0)
    finally:
        group.kill()
    return {"variant": variant, "rate": n / seconds, "seconds": seconds, "limited_ran_meanwhile": ran_limited}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = M = 1,000, 1 repeat")
    parser.add_argument("--n", type=int, default=10_000, help="noop tasks")
    parser.add_argument("--limited", type=int, default=None, help="limited tasks beside them (default: n)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write every run's figures as JSON")
    args = parser.parse_args()
    n, repeats = (1000, 1) if args.quick else (args.n, args.repeats)
    limited = n if args.limited is None else args.limited
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dq_rate_bench_") as folder:
        setup(Path(folder))
        for repeat in range(repeats):
            order = ["plain", "set", "beside"]
            for variant in order if repeat % 2 == 0 else order[::-1]:
                runs.append(run(variant, n, limited, Path(folder)))
                print(json.dumps(runs[-1]), flush=True)
    print(f"\nW2 noop drain, N = {n}, {limited} jobs.limited tasks at {LIMIT['jobs.limited']} beside ('beside'), "
          f"{repeats} repeat(s); Redis broker, 2 workers")
    plain = statistics.median(r["rate"] for r in runs if r["variant"] == "plain")
    for variant in ("plain", "set", "beside"):
        rates = [r["rate"] for r in runs if r["variant"] == variant]
        median = statistics.median(rates)
        print(f"  {variant:7s} {median:8.0f} tasks/s  (min {min(rates):.0f}, max {max(rates):.0f})  "
              f"x{median / plain:.2f} of plain")
    if args.out:
        args.out.write_text(json.dumps({"n": n, "limited": limited, "limit": LIMIT, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
