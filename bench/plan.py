"""Which runs make up a bench session, in interleaved order, and which figures each run feeds."""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from report import Results
from systems import OURS, Target, is_baseline, orm_targets, redis_targets, results_targets
from workloads import Runner


@dataclass
class Job:
    name: str
    target: Target
    run: Callable[[Runner], dict]
    record: Callable[[Results, str, str, dict], None]
    repeats: int | None = None  # fewer repeats than the session's, if set


def _partial(out: dict) -> str | None:
    if out.get("complete", True):
        return None
    return f"{out['done']} of {out['wanted']} tasks in {out['seconds']:.1f} s"


def record_drain(kind: str, n: int = 0, largest: bool = True) -> Callable[[Results, str, str, dict], None]:
    """W2 at each N is a figure of its own (W2@5000); W1 and the start-up take every drain's figure."""
    def record(results: Results, label: str, ours: str, out: dict) -> None:
        if kind == "redis":
            results.add("W1", label, ours, out["enqueue_rate"])
            results.add(f"W2@{n}", label, ours, out["rate"], _partial(out))
            results.add("W4s-start", label, ours, out["first_s"])
            if largest:
                results.add("W4-after", label, ours, out["rss_after_mib"])
        elif kind == "orm":
            results.add("W1-orm", label, ours, out["enqueue_rate"])
            results.add(f"W2-orm@{n}", label, ours, out["rate"], _partial(out))
            results.add("W4s-start-orm", label, ours, out["first_s"])
        elif kind == "results":
            results.add(f"W2b@{n}", label, ours, out["rate"], _partial(out))
        else:
            results.add("W6", label, ours, out["rate"], _partial(out))
            results.add("W6-rss", label, ours, out["rss_peak_mib"])
            results.add("W6-rss-end", label, ours, out["rss_after_mib"])

    return record


def record_latency(results: Results, label: str, ours: str, out: dict) -> None:
    for p in ("p50", "p90", "p99"):
        results.add(f"W3-{p}", label, ours, out[p])
    results.add("W4-idle", label, ours, out["rss_idle_mib"])
    results.add("W4-idle-pss", label, ours, out["pss_idle_mib"])


def record_crash(results: Results, label: str, ours: str, out: dict) -> None:
    results.add("W5-lost", label, ours, out["lost"])
    results.add("W5-twice", label, ours, out["twice"])
    results.add("W5-killed-at", label, ours, out["killed_at"])
    results.add("W5-recovery", label, ours, out["recovery_s"])


def record_bulk(results: Results, label: str, ours: str, out: dict) -> None:
    results.add("W1-bulk", label, ours, out["rate"])


def build(opts: argparse.Namespace, conf: dict, no_pg: bool, results: Results) -> tuple[list[Job], list[Job]]:
    """(jobs repeated `repeats` times in this order, jobs run once at the end).

    A --baseline system (django-q@<hash>) runs wherever ours runs, each of its
    jobs right after ours on the same broker and database (see `order`).
    """
    ours = [OURS, *([opts.baseline_system] if opts.baseline_system else [])]
    systems = [*ours, *opts.peers]
    only = opts.only

    def keep(targets: list[Target]) -> list[Target]:
        return [t for t in targets if not (no_pg and t.db == "postgres")]

    ns, cap, deadline = conf["ns"], conf["enqueue_cap"], conf["deadline"]
    n = max(ns)
    jobs: list[Job] = []
    for size in ns:
        # Every N interleaved in each repeat: A B C at 5,000, A B C at 10,000, then the next repeat.
        if only & {"W1", "W2", "W4"}:
            for t in keep(redis_targets(systems)):
                jobs.append(Job(f"W2 {size}", t, lambda r, t=t, size=size: r.drain(t, size, deadline, cap),
                                record_drain("redis", size, size == n)))
        if "W2" in only:
            for t in keep(orm_targets(systems)):
                jobs.append(Job(f"W2orm {size}", t, lambda r, t=t, size=size: r.drain(t, size, deadline, cap),
                                record_drain("orm", size)))
        if "W2b" in only:
            for t in keep(results_targets(systems)):
                jobs.append(Job(f"W2b {size}", t, lambda r, t=t, size=size: r.drain(t, size, deadline, cap,
                                                                                      results=True),
                                record_drain("results", size)))
    if "W1" in only:
        # Under a second a run: repeated and interleaved like the single calls.
        for s in ours:
            jobs.append(Job("W1 bulk", Target(s), lambda r, t=Target(s): bulk(r, t, n), record_bulk))
    if only & {"W3", "W4"}:
        # --quick leaves out django-q2's database broker here (about 25 s a run).
        orm = [t for t in orm_targets(systems) if conf["w3_orm_peers"] or t.system != "django-q2"]
        lat_targets = redis_targets(systems) + (orm if "W3" in only else [])
        for t in keep(lat_targets):
            jobs.append(Job("W3+W4", t, lambda r, t=t: r.latency(t, conf["lat_tasks"]), record_latency))
    if "W5" in only:
        # Every system on Redis, and our database broker on SQLite and PostgreSQL
        # (django-q2's database broker is left out: about 25 s a run, and the
        # issue compares against its Redis broker). Every system that has a
        # redelivery setting gets the same delay (systems.Target.redelivery_setting).
        for t in keep(redis_targets(systems) + orm_targets(ours)):
            t5 = t.with_(redelivery=conf["w5_redelivery"])
            results.settings.setdefault("W5 redelivery", {})[t5.label] = t5.redelivery_setting()
            jobs.append(Job("W5", t5, lambda r, t=t5: r.crash(t, conf["w5_n"], wait=conf["w5_wait"],
                                                                stall=conf["w5_stall"]), record_crash,
                            repeats=conf["w5_repeats"]))
    workers = results.settings.setdefault("Workers (every setting not named here is the system's default)", {})
    for job in jobs:
        label = job.target.label + (" (W2b)" if job.target.save_limit is not None else "")
        workers[label] = job.target.with_(redelivery=None).worker_summary()
    once: list[Job] = []
    if "W6" in only and conf["w6_n"]:
        for s in ours:
            t = Target(s)
            once.append(Job("W6", t, lambda r, t=t: r.drain(t, conf["w6_n"], 600, 600, sample_rss=True),
                            record_drain("W6")))
    return jobs, once


def bulk(runner: Runner, target: Target, n: int) -> dict:
    """This project's bulk enqueue (ours or the baseline's): one `async_many` call of n no-op tasks (a TODO note without it)."""
    import json

    import procs
    from systems import BENCH

    runner.prepare(target)
    out = json.loads(procs.run(target.driver_cmd("bulk", str(n), "--reset"), target.env(runner.scratch), BENCH, 300)
                     .strip().splitlines()[-1])
    if "todo" in out:
        return {"todo": out["todo"]}
    return {"rate": out["n"] / out["seconds"]}


def order(jobs: list[Job], repeat: int) -> list[Job]:
    """The jobs of one repeat: as built, but in odd repeats each baseline job runs before ours, not after.

    Ours and the baseline then go first equally often (A B, B A, A B ...), so
    neither always runs right after a peer, or first in a session.
    """
    jobs = list(jobs)
    if repeat % 2:
        for i in range(1, len(jobs)):
            a, b = jobs[i - 1], jobs[i]
            if is_baseline(b.target.system) and a.name == b.name and a.target == b.target.with_(system=OURS):
                jobs[i - 1], jobs[i] = b, a
    return jobs


def run_all(runner: Runner, jobs: list[Job], once: list[Job], repeats: int, results: Results) -> None:
    """Every job once per repeat, in order (A B C, A B C, ...), then the once-only jobs."""
    total = sum(min(repeats, j.repeats or repeats) for j in jobs) + len(once)
    count = 0
    for repeat in [*range(repeats), None]:
        for job in order(jobs, repeat) if repeat is not None else once:
            if repeat is not None and job.repeats is not None and repeat >= job.repeats:
                continue
            count += 1
            label = job.target.label
            ours = job.target.ours_label
            started = time.monotonic()
            try:
                out = job.run(runner)
            except Exception as exc:  # one failed run is reported, the session goes on
                results.errors.append(f"{job.name} {label}: {exc}\n{traceback.format_exc()}")
                print(f"[{count}/{total}] {job.name:<7} {label:<30} ERROR {str(exc).splitlines()[0]}", flush=True)
                continue
            if "todo" in out:
                results.notes.append(f"{job.name}: TODO: {out['todo']}")
            else:
                job.record(results, label, ours, out)
            brief = {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}
            print(f"[{count}/{total}] {job.name:<7} {label:<30} {time.monotonic() - started:5.1f} s  {brief}",
                  flush=True)
