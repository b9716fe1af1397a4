"""The workloads of shared/BENCH.md, one function per kind of run; each returns the figures of one run.

A run first stops the session if a process outside the bench uses its stores
(guard.py), then flushes the broker database (12) and the counter database
(15), empties the Django Q tables (through the driver's --reset), enqueues through the
driver in the system's own venv, then starts the system's workers as one
process group and kills the whole group before it returns.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import guard
import procs
from systems import BENCH, BROKER_URL, COUNTER_URL, Target, pg_name

POLL = 0.01  # seconds between reads of the counter
MiB = 1024 * 1024


class Runner:
    """Shared state of one bench session: Redis clients, the scratch folder, migrated databases."""

    def __init__(self, scratch: Path, log=print, counter_url: str = COUNTER_URL) -> None:
        self.scratch = scratch
        self.log = log
        self.broker = guard.redis_client(BROKER_URL)
        self.counter_url = counter_url  # the workers this runner starts count there (worker_env)
        self.counter = guard.redis_client(counter_url)  # read, polled and flushed here
        self.dbs = {r.connection_pool.connection_kwargs["db"] for r in (self.broker, self.counter)}  # 12 and 15
        self.migrated: set[tuple[str, str]] = set()
        self.serial = 0
        self.refused = False  # the guard found someone else using the stores: flush() leaves them alone

    # --- helpers ------------------------------------------------------------

    def prepare(self, target: Target) -> None:
        """Stop if a process outside the bench uses its stores; flush both Redis databases; migrate on first use.

        The guard (guard.py) raises Foreign, a SystemExit, so the session ends
        before anything of this run is measured or written.
        """
        try:
            guard.check(self.broker, self.dbs, pg_name(target.system) if target.db == "postgres" else None)
        except guard.Foreign:
            self.refused = True
            raise
        self.flush()
        if target.stores and (target.system, target.db or "sqlite") not in self.migrated:
            procs.run(target.driver_cmd("migrate"), target.env(self.scratch), BENCH, timeout=120)
            self.migrated.add((target.system, target.db or "sqlite"))

    def flush(self) -> None:
        """Empty both Redis databases (before a run, and when the session ends), unless the guard refused them:
        what is in them then is another process's."""
        if not self.refused:
            self.broker.flushdb()
            self.counter.flushdb()

    def enqueue(self, target: Target, kind: str, n: int, interval: float = 0.02, max_seconds: float = 600) -> tuple[int, float]:
        """Enqueue up to n tasks through the driver (Django Q tables emptied first): (tasks sent, seconds)."""
        args = ["enqueue", kind, str(n), "--interval", str(interval), "--max-seconds", str(max_seconds)]
        if target.stores:
            args.append("--reset")
        out = procs.run(target.driver_cmd(*args), target.env(self.scratch), BENCH, timeout=max_seconds + 120)
        answer = json.loads(out.strip().splitlines()[-1])
        return answer["n"], answer["seconds"]

    def start(self, target: Target) -> procs.Group:
        return self.launch(target, target.worker_cmd(), self.worker_env(target))

    def worker_env(self, target: Target) -> dict[str, str]:
        """`target`'s environment, its task bodies counting on this runner's counter."""
        return {**target.env(self.scratch), "BENCH_COUNTER_URL": self.counter_url}

    def launch(self, target: Target, cmd: list[str], env: dict[str, str], tag: str = "") -> procs.Group:
        """Start `cmd` as `target`'s workers, logging to a file of the scratch folder numbered by start."""
        self.serial += 1
        log = self.scratch / f"{self.serial:03d}-{tag}{target.label.replace(' ', '_').replace('/', '-')}.log"
        return procs.Group(cmd, env, BENCH, log)

    def done(self) -> int:
        return int(self.counter.get("bench:done") or 0)

    def stored_results(self, target: Target):
        """A function that counts the rows of django_q_task in the target's database."""
        if target.db == "postgres":
            import psycopg

            conn = psycopg.connect(f"host=127.0.0.1 user=postgres dbname={pg_name(target.system)}", autocommit=True,
                                   application_name=guard.harness_name())
        else:
            conn = sqlite3.connect(target.env(self.scratch)["BENCH_SQLITE"], timeout=5, isolation_level=None)

        def count() -> int:
            return conn.execute("SELECT COUNT(*) FROM django_q_task").fetchone()[0]

        count.close = conn.close  # type: ignore[attr-defined]
        return count

    # --- W1, W2, W2b, W4 (after), W6 -----------------------------------------

    def drain(
        self, target: Target, n: int, deadline: float, enqueue_cap: float, results: bool = False, sample_rss: bool = False
    ) -> dict:
        """Enqueue n no-op tasks (W1), then time the workers from start to the last run (W2) or save (W2b).

        Also the start-up (W4s): from the start of the workers to the first task
        seen done (the counter is polled every 10 ms).

        A system too slow to enqueue n tasks in `enqueue_cap` seconds, or to run
        them in `deadline` seconds, is timed over what it did ("complete": False).
        """
        self.prepare(target)
        wanted = n
        n, enqueue_s = self.enqueue(target, "noop", n, max_seconds=enqueue_cap)
        count = self.stored_results(target) if results else None
        progress = count or self.done
        peak = 0
        next_sample = 0.0
        group = self.start(target)
        t0 = time.monotonic()
        first = None
        try:
            finished = None
            while True:
                now = time.monotonic()
                if first is None and self.done():
                    first = now - t0
                if sample_rss and now >= next_sample:
                    peak = max(peak, group.rss())
                    next_sample = now + 0.5
                if progress() >= n:
                    finished = time.monotonic()
                    break
                if now - t0 > deadline:
                    break
                if not group.alive():
                    raise RuntimeError(f"{target.label} workers exited {group.proc.returncode}:\n{group.tail()}")
                time.sleep(POLL if count is None else 5 * POLL)
            elapsed = (finished or time.monotonic()) - t0
            ran = progress()
            rss_after = group.rss()
        finally:
            group.kill()
            if count is not None:
                count.close()
        return {
            "enqueue_rate": n / enqueue_s,
            "rate": ran / elapsed,
            "done": ran,
            "n": n,
            "wanted": wanted,
            "complete": finished is not None and n == wanted,
            "seconds": elapsed,
            "first_s": first if first is not None else float("nan"),
            "rss_after_mib": rss_after / MiB,
            "rss_peak_mib": max(peak, rss_after) / MiB,
        }

    # --- W3, W4 (idle) ------------------------------------------------------

    def latency(self, target: Target, tasks: int, idle: float = 3.0, gap: float = 0.02) -> dict:
        """Idle RSS 3 s after start (W4), then tasks enqueued `gap` apart and their start - enqueue (W3)."""
        self.prepare(target)
        if target.stores:
            self.enqueue(target, "noop", 0)  # only empties the system's tables
        group = self.start(target)
        try:
            time.sleep(idle)
            if not group.alive():
                raise RuntimeError(f"{target.label} workers exited {group.proc.returncode}:\n{group.tail()}")
            rss_idle, pss_idle = group.rss(), group.pss()
            self.enqueue(target, "latency", tasks, gap)
            deadline = time.monotonic() + 30
            while self.counter.llen("bench:lat") < tasks and time.monotonic() < deadline:
                time.sleep(0.05)
            waits = sorted(float(v) * 1000 for v in self.counter.lrange("bench:lat", 0, -1))
        finally:
            group.kill()
        if len(waits) < tasks:
            raise RuntimeError(f"{target.label}: only {len(waits)} of {tasks} latency tasks ran in 30 s")
        return {"p50": pct(waits, 50), "p90": pct(waits, 90), "p99": pct(waits, 99), "rss_idle_mib": rss_idle / MiB,
                "pss_idle_mib": pss_idle / MiB}

    # --- W5 ---------------------------------------------------------------------

    def crash(self, target: Target, n: int, kill_at: float = 0.4, wait: float = 60.0, stall: float = 20.0) -> dict:
        """SIGKILL the whole tree at ~40 % done, start again, wait up to `wait` s: tasks lost, run twice, recovery time.

        The wait also ends when no task ran for `stall` seconds (longer than the
        redelivery delay every system that has one is given: target.redelivery).
        """
        self.prepare(target)
        self.enqueue(target, "sleepy", n)
        group = self.start(target)
        try:
            limit = time.monotonic() + 120
            while self.done() < n * kill_at and time.monotonic() < limit:
                if not group.alive():
                    raise RuntimeError(f"{target.label} workers exited {group.proc.returncode}:\n{group.tail()}")
                time.sleep(POLL)
            at_kill = self.done()
        finally:
            group.kill(signal.SIGKILL)
        killed = time.monotonic()
        recovery = float("nan")  # never, within the wait: a task was lost
        keys = [f"bench:w5:{i}" for i in range(n)]
        group = self.start(target)
        try:
            limit = killed + wait
            last, last_change = self.done(), time.monotonic()
            while time.monotonic() < limit:
                if all(self.counter.mget(keys)):
                    recovery = time.monotonic() - killed
                    time.sleep(1.0)  # let a late duplicate show up
                    break
                if self.done() != last:
                    last, last_change = self.done(), time.monotonic()
                elif time.monotonic() - last_change > stall:
                    break
                time.sleep(0.05)
        finally:
            group.kill(signal.SIGKILL)
        runs = [int(v or 0) for v in self.counter.mget(keys)]
        lost = [i for i, v in enumerate(runs) if v == 0]
        twice = [i for i, v in enumerate(runs) if v > 1]
        return {
            "lost": len(lost),
            "twice": len(twice),
            "killed_at": at_kill,
            "n": n,
            # From the SIGKILL (the restart follows at once) to every task run at least once, polled every 50 ms:
            # the killed cluster's tasks wait out the redelivery setting; nan when some never ran.
            "recovery_s": recovery,
            # The task numbers (the argument of sleepy), to find them in the worker logs.
            "lost_ids": lost[:20],
            "twice_ids": twice[:20],
        }


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(p / 100 * len(sorted_values) + 0.4999))
    return sorted_values[min(rank, len(sorted_values)) - 1]
