"""Cluster status: a real cluster publishes it through its broker, and removes it when it stops."""

from __future__ import annotations

import os
import socket
import time

import pytest

from django_q.status import DURATION_BUCKETS, PERIOD, RUNNING, ClusterStatus, cluster_statuses
from django_q.tasks import async_task, result

from .conftest import wait_until


def one_status(state: str | None = None) -> ClusterStatus | None:
    found = cluster_statuses()
    if len(found) == 1 and (state is None or found[0].state == state):
        return found[0]
    return None


def test_running_cluster_publishes_its_status(cluster):
    running = cluster()
    status = wait_until(lambda: one_status(RUNNING), timeout=30)
    sentinel = running.sentinel
    assert status.id == sentinel.identity.id and len(status.id) == 32
    assert status.pid == running.pid  # the sentinel's process
    assert status.host == socket.gethostname()
    assert status.name == sentinel.config.name
    workers = {p.pid for p in running.view().workers}
    assert {w.pid for w in status.workers} == workers
    assert sorted(w.index for w in status.workers) == [0, 1]
    assert all(w.task_id is None for w in status.workers)
    assert status.queued == 0 and status.done == 0 and status.failed == 0
    assert 0 <= status.uptime < 60


def test_status_shows_running_tasks_and_counts(cluster):
    cluster()
    wait_until(lambda: one_status(RUNNING), timeout=30)
    slow = async_task("tests.app.tasks.sleep", 3, "done", task_name="slow-one")

    def busy():
        status = one_status()
        return status if status and any(w.task_id == slow for w in status.workers) else None

    status = wait_until(busy, timeout=15)
    worker = next(w for w in status.workers if w.task_id == slow)
    assert worker.task_name == "slow-one"
    assert worker.started is not None and worker.started <= time.time()
    assert status.running == 1

    for _ in range(3):
        async_task("tests.app.tasks.add", 1, 2)
    failing = async_task("tests.app.tasks.fail")
    assert result(slow, wait=15_000) == "done"
    wait_until(lambda: result(failing) is not None, timeout=15)

    def counted():
        status = one_status()
        return status if status and status.done == 4 and status.failed == 1 else None

    status = wait_until(counted, timeout=10)
    c = status.counters
    assert (c.enqueued, c.started, c.succeeded, c.failed, c.retried, c.dead_lettered) == (5, 5, 4, 1, 0, 0)
    assert sum(c.duration_buckets) == 5 and len(c.duration_buckets) == len(DURATION_BUCKETS) + 1
    assert c.duration_sum >= 3.0  # the slow task alone slept 3 s
    assert status.running == 0


def test_graceful_stop_removes_the_entry(cluster):
    running = cluster()
    wait_until(lambda: one_status(RUNNING), timeout=30)
    running.stop()
    assert cluster_statuses() == []


@pytest.mark.slow
def test_two_clusters_of_one_queue_both_show(cluster):
    first, second = cluster(), cluster()
    both = wait_until(lambda: len(cluster_statuses()) == 2 and cluster_statuses(), timeout=30)
    assert {s.id for s in both} == {first.sentinel.identity.id, second.sentinel.identity.id}
    first.stop()
    left = wait_until(lambda: len(cluster_statuses()) == 1 and cluster_statuses(), timeout=PERIOD * 5)
    assert left[0].id == second.sentinel.identity.id
