"""Crashes of whole clusters, run as users run them: `qcluster` subprocesses killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import time

import psutil
import pytest
from django.conf import settings

from .test_qcluster import Project

pytestmark = [pytest.mark.slow, pytest.mark.faults]

TASKS = 600
# A whole cluster killed at once reruns the tasks it was running and those that
# finished in the last moments before their results were committed (the saver
# saves in batches). How many that is depends on the machine's load; on a quiet
# machine it is a handful (bench W5). The bound catches wholesale reruns.
WINDOW = TASKS // 5


@pytest.fixture(params=["orm", "redis"])
def crash_project(request, tmp_path):
    project = Project(tmp_path, settings.REDIS_URL if request.param == "redis" else None)
    project.env["DQ_ACCEPT_RETRY"] = "5"
    project.env["DQ_ACCEPT_SAVE_LIMIT"] = "0"  # keep every result, so redeliveries can see them
    assert project.run("-m", "django", "migrate", "-v", "0").returncode == 0
    yield project
    project.kill_all()
    if request.param == "redis":
        project.drive("purge")




def enqueue_counted(project: Project, prefix: str, count: int) -> None:
    """`count` tasks that each sleep 5 ms then INCR a key of their own."""
    code = (
        "import django; django.setup()\n"
        "from django_q.tasks import async_task\n"
        f"for i in range({count}):\n"
        f"    async_task('tests.app.tasks.incr', '{prefix}' + str(i), 0.005, '{settings.REDIS_URL}', group='crash')\n"
    )
    done = project.run("-c", code, timeout=120)
    assert done.returncode == 0, done.stderr


def runs(client, prefix: str, count: int) -> list[int]:
    values = client.mget([f"{prefix}{i}" for i in range(count)])
    return [int(v or 0) for v in values]


def wait_runs(client, prefix: str, count: int, at_least: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = runs(client, prefix, count)
        if sum(1 for v in seen if v) >= at_least:
            return seen
        time.sleep(0.05)
    pytest.fail(f"fewer than {at_least} of {count} tasks ran within {timeout}s")


def kill_tree(proc) -> None:
    """SIGKILL a cluster and every process under it at once, as a host dying would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_whole_cluster_killed_mid_drain_loses_nothing(crash_project, counters):
    client, prefix = counters
    enqueue_counted(crash_project, prefix, TASKS)
    first = crash_project.qcluster()
    wait_runs(client, prefix, TASKS, int(TASKS * 0.4), timeout=60)
    kill_tree(first)
    crash_project.qcluster()
    seen = wait_runs(client, prefix, TASKS, TASKS, timeout=90)
    twice = sum(1 for v in seen if v > 1)
    assert min(seen) >= 1  # none lost
    assert twice <= WINDOW, f"{twice} tasks ran twice"


def test_sentinel_killed_alone_takes_its_children_down_and_loses_nothing(crash_project, counters):
    client, prefix = counters
    enqueue_counted(crash_project, prefix, TASKS)
    first = crash_project.qcluster()
    wait_runs(client, prefix, TASKS, int(TASKS * 0.3), timeout=60)
    children = psutil.Process(first.pid).children()
    first.kill()  # SIGKILL to the sentinel only
    first.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphans left running: {[p.pid for p in alive]}"
    crash_project.qcluster()
    seen = wait_runs(client, prefix, TASKS, TASKS, timeout=90)
    assert min(seen) >= 1
    # The orphaned pusher stops gracefully: its workers finish, results are saved.
    assert sum(1 for v in seen if v > 1) <= 2


def test_random_worker_kills_lose_nothing(crash_project, counters):
    client, prefix = counters
    count = 2000
    enqueue_counted(crash_project, prefix, count)
    cluster = crash_project.qcluster()
    kills = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen = runs(client, prefix, count)
        if all(seen):
            break
        victims = [p for p in psutil.Process(cluster.pid).children() if _is_worker(p)]
        if victims:
            try:
                random.choice(victims).kill()
                kills += 1
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.5)
    seen = runs(client, prefix, count)
    assert min(seen) >= 1, f"lost {seen.count(0)} tasks"
    assert kills >= 3
    assert sum(1 for v in seen if v > 1) <= kills  # only a task whose worker died may run twice


def _is_worker(proc: psutil.Process) -> bool:
    try:
        return proc.cmdline()[0].startswith("django_q worker-")
    except psutil.Error:
        return False


def test_two_clusters_share_a_queue_and_one_is_killed(crash_project, counters):
    """Two qcluster processes on one queue, as on two hosts; one dies mid-drain, the other finishes."""
    client, prefix = counters
    count = 1000
    enqueue_counted(crash_project, prefix, count)
    doomed = crash_project.qcluster()
    survivor = crash_project.qcluster()
    wait_runs(client, prefix, count, count * 3 // 10, timeout=60)
    kill_tree(doomed)
    seen = wait_runs(client, prefix, count, count, timeout=90)
    assert min(seen) >= 1
    assert sum(1 for v in seen if v > 1) <= WINDOW  # only what the dead cluster was running or saving
    assert survivor.poll() is None
