"""Clusters on several hosts: a whole cluster killed (every process, SIGKILL) has its leased tasks run by
the other within 10 s although `retry` is 60 s, and one paused past its heartbeat saves no second result."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import psutil
import pytest
from django.db import connection

from django_q.cluster.leases import BEAT, DEAD_AFTER
from django_q.models import Task
from django_q.tasks import async_task

from .conftest import Running, wait_until

RETRY = 60  # the default: a lease that lapsed on its own would take this long
PAUSE_TRIES = 50  # pauses let go because they caught the cluster inside a write to SQLite


def starts(folder) -> list[tuple[int, int, float]]:
    """(task number, sentinel pid, epoch) of every start of note_then_sleep, in start order."""
    found = []
    for name in os.listdir(folder):
        n, ppid, at = name.split("-")
        found.append((int(n), int(ppid), float(at)))
    return sorted(found, key=lambda s: s[2])


def signal_whole(running: Running, signum: int) -> None:
    """Send `signum` to the sentinel and every process under it, as to a host's every process at once."""
    procs = [psutil.Process(running.pid), *psutil.Process(running.pid).children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


def pause_outside_writes(running: Running) -> None:
    """SIGSTOP the whole cluster at a moment when none of its processes holds SQLite's write lock.

    SQLite's lock is held by the writing process itself: one paused inside a
    write stops every other writer, the other cluster too, until it resumes,
    and no code can take the lock from it. Clusters on several hosts share a
    database server (PostgreSQL, MariaDB), which ends a statement whatever its
    client does; only the tests' SQLite puts two "hosts" on one file. So a
    pause that caught a write is let go and taken again.
    """
    for _ in range(PAUSE_TRIES):
        signal_whole(running, signal.SIGSTOP)
        if connection.vendor != "sqlite" or not sqlite_write_locked(connection.settings_dict["NAME"]):
            return
        signal_whole(running, signal.SIGCONT)
        time.sleep(0.02)
    pytest.fail(f"the cluster was inside a write to SQLite at each of {PAUSE_TRIES} pauses")


def sqlite_write_locked(path: str) -> bool:
    probe = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:  # "database is locked"
        return True
    finally:
        probe.close()


def enqueue(folder, count: int, seconds: float) -> dict[str, int]:
    return {async_task("tests.app.tasks.note_then_sleep", str(folder), n, seconds): n for n in range(count)}


def test_a_killed_clusters_tasks_start_on_the_other_within_10s(cluster, tmp_path):
    folder = tmp_path / "starts"
    folder.mkdir()
    ids = enqueue(folder, 24, 0.4)
    doomed = cluster(retry=RETRY)
    survivor = cluster(retry=RETRY)
    wait_until(lambda: sum(ppid == doomed.pid for _, ppid, _ in starts(folder)) >= 2)
    signal_whole(doomed, signal.SIGSTOP)  # frozen first, so that nothing it starts outlives the kill
    killed_at = time.time()
    signal_whole(doomed, signal.SIGKILL)
    wait_until(lambda: Task.objects.filter(id__in=ids, success=True).count() == len(ids), timeout=40)

    redelivered = {ids[t.id] for t in Task.objects.filter(id__in=ids) if t.attempt_count > 1}
    assert redelivered, "the killed cluster held no task at the kill"
    for n in redelivered:
        again = [at for m, ppid, at in starts(folder) if m == n and ppid == survivor.pid and at > killed_at]
        assert again, f"task {n} did not start on the survivor after the kill"
        assert again[0] - killed_at < DEAD_AFTER + 4 * BEAT  # within 10 s, though the lease ran for 60


def test_a_paused_cluster_saves_no_result_for_tasks_that_went_elsewhere(cluster, tmp_path):
    folder = tmp_path / "starts"
    folder.mkdir()
    ids = enqueue(folder, 4, 2.0)
    paused = cluster(retry=RETRY)
    wait_until(lambda: sum(ppid == paused.pid for _, ppid, _ in starts(folder)) >= 2)
    pause_outside_writes(paused)
    try:
        started_there = {n for n, ppid, _ in starts(folder) if ppid == paused.pid}
        other = cluster(retry=RETRY)
        # Past its heartbeat: the other takes over what it was running, and runs it.
        wait_until(lambda: started_there <= {n for n, ppid, _ in starts(folder) if ppid == other.pid}, timeout=30)
    finally:
        # Its tasks' 2 s are over: they end at once, well before the other's runs of them.
        signal_whole(paused, signal.SIGCONT)
    wait_until(lambda: Task.objects.filter(id__in=ids).count() == len(ids), timeout=30)

    rows = {ids[t.id]: t for t in Task.objects.filter(id__in=ids)}
    assert all(rows[n].success for n in rows)
    # Saved once, from the run that counts: the other cluster's second delivery, not the paused one's first.
    assert {n: rows[n].attempt_count for n in started_there} == {n: 2 for n in started_there}
    assert Task.objects.filter(id__in=ids).count() == len(ids)
