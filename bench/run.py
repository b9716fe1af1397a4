#!/usr/bin/env python3
"""Run the workloads of shared/BENCH.md for Django Q and its peers, interleaved; print one table, write JSON.

    python bench/run.py [--quick] [--only W2,W3] [--peers huey,dramatiq,procrastinate] [--baseline REF] [--out FILE]

One run at a time on this machine (a lock file, see lock.py). The first run
makes one virtualenv per system under bench/.venvs/ (pinned in venvs.py), then
this script re-executes itself in the harness venv. Needs
Redis on 127.0.0.1:6379 (db 12: brokers, db 15: counters; both are flushed)
and PostgreSQL on 127.0.0.1:5432 (user postgres; databases dq_bench, dq2_bench,
djtasks_bench and procrastinate_bench are created afresh, and dq_bench_base
with --baseline). Every run starts
the workers as one process group and kills the whole group before the next run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import lock  # noqa: E402
import venvs  # noqa: E402

WORKLOADS = ("W1", "W2", "W2b", "W3", "W4", "W5", "W6")
ALL_PEERS = ("django-q2", "celery", "rq", "huey", "dramatiq", "saq", "procrastinate", "django-tasks-db")
HARNESS = "harness"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, 1 repeat, no W6: a few minutes")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. W2,W3 (default: all)")
    parser.add_argument("--peers", default=",".join(ALL_PEERS), help="peers to compare ('' for none)")
    parser.add_argument("--out", default=str(BENCH / "results.json"), help="the JSON file to write")
    parser.add_argument("--repeats", type=int, help="repeats of each run (default 3; --quick 1)")
    parser.add_argument("-n", help="tasks per drain, one or more N (default 5000,10000; --quick 500,1000)")
    parser.add_argument("--w5-repeats", type=int, help="repeats of W5 (default 1)")
    parser.add_argument("--keep-scratch", action="store_true",
                        help="keep the scratch folder (worker logs, SQLite files) and print its path")
    parser.add_argument("--profile", action="store_true", help="only py-spy the django_q cluster during W2 on Redis")
    parser.add_argument(
        "--baseline", metavar="REF",
        help="also measure this package as it was at REF (a git commit-ish, e.g. 1de129c or main~3) as the system "
             "django-q@<hash>: in every workload that runs django-q (W1 with its bulk path, W2 on Redis and the "
             "database broker, W2b, W3, W4, W5, W6; not --profile), right after ours in the 1st, 3rd ... repeat, "
             "right before it in the 2nd, 4th ..., figures and ratio to ours like a peer's. Installed from `git archive REF` into "
             "bench/.venvs/src/<commit> (work tree and branches untouched), pip-installed (not editable) into its own venv "
             "bench/.venvs/django-q@<hash> with ours' pins; its own PostgreSQL database "
             "dq_bench_base and SQLite file. Works with --peers ''")
    opts = parser.parse_args(argv)
    opts.only = {w.strip() for w in opts.only.split(",") if w.strip()}
    unknown = opts.only - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; known: {', '.join(WORKLOADS)}")
    opts.peers = [p.strip() for p in opts.peers.split(",") if p.strip()]
    if opts.n is not None:
        try:
            opts.n = sorted({int(v) for v in opts.n.split(",") if v.strip()})
        except ValueError:
            parser.error(f"-n: {opts.n!r} is not a comma-separated list of task counts")
        if not opts.n or min(opts.n) < 1:
            parser.error("-n: give at least one task count, each at least 1")
    bad = set(opts.peers) - set(ALL_PEERS)
    if bad:
        parser.error(f"unknown peer(s) {', '.join(sorted(bad))}; known: {', '.join(ALL_PEERS)}")
    venvs.take_baseline(parser, opts)
    return opts


def bootstrap(opts: argparse.Namespace) -> None:
    """Take the lock, make the venvs, then continue in the harness venv (psutil, redis, psycopg), lock held."""
    if os.environ.get("BENCH_IN_VENV") == "1":
        lock.inherited()
        return
    fd = lock.acquire()
    ours = ["django-q"]
    if opts.baseline_system:
        venvs.export(opts.baseline_commit)
        ours.append(opts.baseline_system)
    for system in (HARNESS, *ours, *opts.peers):
        venvs.ensure(system)
    python = str(venvs.python(HARNESS))
    env = {**os.environ, "BENCH_IN_VENV": "1", lock.ENV: str(fd)}
    if opts.baseline_system:
        env["BENCH_BASELINE_COMMIT"] = opts.baseline_commit
    os.execve(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]], env)


def settings(opts: argparse.Namespace) -> dict:
    """Sizes, deadlines and repeats of this run."""
    # W5: every system with a redelivery setting gets w5_redelivery seconds; the
    # wait after the restart ends when no task ran for w5_stall seconds, longer.
    if opts.quick:
        conf = dict(ns=[500, 1000], repeats=1, enqueue_cap=2.0, deadline=4.0, lat_tasks=60, w5_n=300,
                    w5_wait=45.0, w5_stall=15.0, w5_redelivery=5, w5_repeats=1, w6_n=0, w3_orm_peers=False)
    else:
        # W5 gives counts, not timings, and costs a stall wait per lossy system: once per session.
        conf = dict(ns=[5_000, 10_000], repeats=3, enqueue_cap=12.0, deadline=12.0, lat_tasks=300, w5_n=2000,
                    w5_wait=60.0, w5_stall=20.0, w5_redelivery=5, w5_repeats=1, w6_n=100_000, w3_orm_peers=True)
    if opts.n:
        conf["ns"] = opts.n
    if opts.repeats:
        conf["repeats"] = opts.repeats
    if opts.w5_repeats:
        conf["w5_repeats"] = opts.w5_repeats
    return conf


def preflight(baseline: bool = False) -> list[str]:
    """Check Redis, create the PostgreSQL databases afresh; return notes on what is unavailable."""
    import psycopg
    import redis

    from systems import BASELINE_PG_NAME, PG_NAMES

    redis.Redis.from_url("redis://127.0.0.1:6379/15").ping()
    try:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True, connect_timeout=5) as c:
            for name in (*PG_NAMES.values(), *([BASELINE_PG_NAME] if baseline else [])):
                # Fresh, like the SQLite files: a database migrated by an older
                # commit (a migration since renamed or edited) fails to migrate.
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        return [f"PostgreSQL unavailable, its targets skipped: {exc}"]
    return []


def package_files(opts: argparse.Namespace, scratch: Path) -> dict[str, str]:
    """system -> the django_q/__init__.py its processes import (their venv, environment and folder).

    Ours (and a --baseline) is installed into its venv, not editable: this stops
    the session if a system imports a django_q outside its venv, or one whose
    .py files differ from the folder it was installed from (the work tree, or
    the baseline's export), so a run never measures stale or foreign code.
    """
    import procs
    from systems import BENCH, Target

    wanted = {"django-q": venvs.REPO}
    if opts.baseline_system:
        wanted[opts.baseline_system] = venvs.source(opts.baseline_commit)
    found = {}
    for system, root in wanted.items():
        t = Target(system)
        out = procs.run([t.python(), "-c", "import django_q; print(django_q.__file__)"], t.env(scratch), BENCH, 60)
        found[system] = out.strip().splitlines()[-1]
        installed = Path(found[system]).resolve().parent
        if venvs.VENVS.resolve() / system not in installed.parents:
            raise SystemExit(f"{system} imports {found[system]}, not the copy installed in bench/.venvs/{system}")
        if py_files(installed) != py_files(root / "django_q"):
            raise SystemExit(f"{system}: the django_q installed in bench/.venvs/{system} differs from {root}/django_q")
    return found


def py_files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*.py")}


def meta(opts: argparse.Namespace, conf: dict, systems: list[str], load_at_start: list[float]) -> dict:
    baseline = None
    if opts.baseline_system:
        baseline = {"ref": opts.baseline, "commit": opts.baseline_commit, "system": opts.baseline_system,
                    "source": str(venvs.source(opts.baseline_commit))}

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=venvs.REPO, capture_output=True, text=True)
        return out.stdout.strip()

    keep = {"django", "django-q", "django-q2", "celery", "kombu", "rq", "huey", "dramatiq", "saq", "procrastinate",
            "django-tasks-db", "redis", "hiredis", "psycopg", "psycopg-binary", "psycopg-pool"}
    return {
        "commit": git("rev-parse", "HEAD"),
        "baseline": baseline,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "bench/run.py", *sys.argv[1:]]),  # --peers '' stays visible
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        # Other work on the machine skews every figure; ratios measured interleaved less so.
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": list(os.getloadavg()),
        "settings": conf,
        "versions": {s: {k: v for k, v in venvs.freeze(s).items() if k in keep} for s in systems},
        "pins": {s: venvs.PINS[s] for s in systems},
    }


def main() -> int:
    opts = parse(sys.argv[1:])
    bootstrap(opts)
    from plan import build, run_all
    from report import Results
    from workloads import Runner

    conf = settings(opts)
    load_at_start = list(os.getloadavg())
    if load_at_start[0] > 1.0:
        print(f"warning: load average {load_at_start[0]:.1f} before the bench: other work will skew the figures")
    results = Results()
    results.notes += preflight(bool(opts.baseline_system))
    no_pg = bool(results.notes)
    scratch = Path(tempfile.mkdtemp(prefix="django_q_bench-"))
    runner = Runner(scratch)
    started = time.monotonic()
    try:
        imports = package_files(opts, scratch)
        if opts.baseline_system:
            for system, path in imports.items():
                print(f"{system} imports {path}")
        if opts.profile:
            from profile_cluster import profile

            profile(runner, conf)
            return 0
        jobs, once = build(opts, conf, no_pg, results)
        run_all(runner, jobs, once, conf["repeats"], results)
    finally:
        runner.flush()
        if opts.keep_scratch:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(results.table())
    print()
    print(results.overview())
    print(results.targets_table())
    for note in results.notes:
        print("note:", note)
    for error in results.errors:
        print("ERROR:", error.splitlines()[0])
    out = Path(opts.out)
    systems = ["django-q", *([opts.baseline_system] if opts.baseline_system else []), *opts.peers]
    results.write(out, {**meta(opts, conf, systems, load_at_start), "django_q_files": imports,
                        "seconds": round(time.monotonic() - started)})
    print(f"\n{len(results.errors)} errors; {time.monotonic() - started:.0f} s; figures written to {out}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
