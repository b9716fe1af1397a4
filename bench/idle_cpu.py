"""CPU an idle Django Q cluster burns: user+system seconds of its whole process tree over a window.

    .venv/bin/python bench/idle_cpu.py [--seconds 10] [--settle 3] [--targets redis,orm/sqlite,orm/pg]

Starts `qcluster` (2 workers, default settings) on each target with an empty
queue, lets it settle, then reads psutil's cpu_times of every process in its
tree at the start and end of the window. Prints one line per target, as a
percentage of one core. Uses bench/.venvs/django-q, made or brought up to
date (ours is installed, not editable) first, and holds the bench lock: it
shares the bench's databases. Like every bench run, it stops if a process
outside the bench uses them (guard.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guard  # noqa: E402
import lock  # noqa: E402
import procs  # noqa: E402
import venvs  # noqa: E402
from systems import BENCH, BROKER_URL, OURS, Target, pg_name  # noqa: E402

TARGETS = {
    "redis": Target(OURS),
    "orm/sqlite": Target(OURS, "orm", "sqlite"),
    "orm/pg": Target(OURS, "orm", "postgres"),
}


def cpu_seconds(group: procs.Group) -> dict[int, float]:
    out = {}
    for p in group.tree():
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return out


def measure(target: Target, seconds: float, settle: float, scratch: Path) -> float:
    """Percent of one core the idle cluster of `target` used over `seconds`."""
    with guard.redis_client(BROKER_URL) as client:  # a stray producer would keep the cluster busy
        guard.check(client, {12, 15}, pg_name(target.system) if target.db == "postgres" else None)
    env = target.env(scratch)
    procs.run(target.driver_cmd("migrate"), env, BENCH, timeout=120)
    procs.run(target.driver_cmd("enqueue", "noop", "0", "--reset"), env, BENCH, timeout=120)
    with procs.Group(target.worker_cmd(), env, BENCH, scratch / "idle.log") as group:
        time.sleep(settle)
        before = cpu_seconds(group)
        time.sleep(seconds)
        after = cpu_seconds(group)
    # Processes that started or ended inside the window count from zero or are left out.
    used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    return 100 * used / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--targets", default=",".join(TARGETS))
    opts = parser.parse_args()
    lock.acquire()  # held until this process ends
    venvs.ensure(OURS)
    results = {}
    with tempfile.TemporaryDirectory(prefix="django_q_idle-") as scratch:
        for name in opts.targets.split(","):
            results[name] = round(measure(TARGETS[name], opts.seconds, opts.settle, Path(scratch)), 2)
            print(f"{name:12} {results[name]:6.2f} % of one core idle over {opts.seconds:g} s", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
