"""End to end: enqueue with the public API, a real cluster runs it, results land in the database."""

import gc
import os
import signal
import sys
import time
from dataclasses import replace

import psutil
import pytest

from django_q.brokers import get_broker
from django_q.conf import get_config
from django_q.models import Failure, OrmQ, Success, Task
from django_q.names import humanize
from django_q.package import unpack
from django_q.enqueue import build_package
from django_q.tasks import (
    async_many,
    async_chain,
    async_iter,
    async_task,
    count_group,
    fetch,
    fetch_group,
    queue_size,
    result,
    result_group,
)
from tests.app.models import Hooked
from tests.app.tasks import add

from .conftest import wait_until


def test_seed_examples(cluster):
    cluster()
    task_id = async_task("math.copysign", 2, -2)
    assert result(task_id, wait=30_000) == -2.0
    hooked = async_task("math.modf", 2.5, hook="tests.app.tasks.record_hook")
    assert result(hooked, wait=30_000) == (0.5, 2.0)
    row = wait_until(lambda: Hooked.objects.filter(task_id=hooked).first())
    assert row.result == "(0.5, 2.0)" and row.success


def test_a_call_without_options_gives_the_broker_the_package_build_package_makes(q_cluster):
    """Such a call serializes its package from its function's remembered fields without making it."""
    config = get_config()
    before = time.time()
    calls = [("tests.app.tasks.add", (1,), {"b": 2}), (add, (3, 4), {}), ("tests.app.tasks.pid", (), {})]
    ids = [async_task(func, *args, **kwargs) for func, args, kwargs in calls]
    ids.append(async_task("tests.app.tasks.add", 5, 6))  # the remembered fields again
    calls.append(("tests.app.tasks.add", (5, 6), {}))
    held = {}
    deadline = time.monotonic() + 10
    while len(held) < len(ids) and time.monotonic() < deadline:
        for delivery in get_broker().dequeue(len(ids), 1.0):
            task = unpack(delivery.payload, config.package_limit)
            held[task.id] = task
    for task_id, (func, args, kwargs) in zip(ids, calls):
        task = held[task_id]
        assert task.name == humanize(task_id) and before <= task.enqueued <= time.time()
        expected = build_package(func, args, kwargs, {}, config, id=task_id)
        assert replace(task, enqueued=0.0) == replace(expected, enqueued=0.0)


def test_many_tasks_all_saved_and_acked(cluster, q_cluster):
    cluster(save_limit=0)
    ids = [async_task("tests.app.tasks.add", i, i, group="many") for i in range(200)]
    wait_until(lambda: count_group("many") == 200)
    assert sorted(result_group("many")) == sorted(2 * i for i in range(200))
    wait_until(lambda: queue_size() == 0)
    assert Task.objects.filter(id__in=ids).count() == 200


def test_failure_keeps_traceback_and_hook_failure_is_only_logged(cluster):
    cluster()
    failed = async_task("tests.app.tasks.fail", "kaput", hook="tests.app.tasks.bad_hook")
    task = fetch(failed, wait=30_000)
    assert task is not None and not task.success
    assert "ValueError: kaput" in task.result
    assert Failure.objects.filter(id=failed).exists()
    ok = async_task("tests.app.tasks.add", 1, 2)
    assert result(ok, wait=30_000) == 3  # the cluster goes on after a failing hook


def test_coroutine_function_is_awaited(cluster):
    cluster()
    assert result(async_task("tests.app.tasks.async_add", 2, 3), wait=30_000) == 5


def test_iter_and_chain(cluster):
    cluster()
    parent = async_iter("tests.app.tasks.add", [(1, 1), (2, 2), (3, 3)])
    assert result(parent, wait=30_000) == [2, 4, 6]
    group = async_chain([("tests.app.tasks.add", (1, 2)), ("tests.app.tasks.add", (3, 4))])
    assert sorted(result_group(group, count=2, wait=30_000)) == [3, 7]


def test_a_group_count_without_a_wait_waits_for_that_many_as_in_django_q(cluster):
    cluster()
    for i in range(3):
        async_task("tests.app.tasks.add", i, 10, group="counted")
    assert sorted(result_group("counted", count=3)) == [10, 11, 12]  # pytest-timeout bounds it
    assert len(fetch_group("counted", count=3)) == 3


def test_timeout_kills_worker_and_records_failure(cluster):
    running = cluster(timeout=1.0)
    slow = async_task("tests.app.tasks.sleep", 30)
    task = fetch(slow, wait=30_000)
    assert not task.success and "timeout" in task.result
    assert result(async_task("tests.app.tasks.add", 2, 2), wait=30_000) == 4  # a replacement worker runs
    running.stop()


def test_recycle_replaces_workers(cluster):
    cluster(recycle=2, workers=1)
    pids = {result(async_task("tests.app.tasks.pid"), wait=30_000) for _ in range(6)}
    assert len(pids) >= 3


def test_a_worker_about_to_be_recycled_is_replaced_before_it_goes_and_never_alongside(cluster):
    """The replacement starts while the worker runs its last task, and gets no job until that worker left."""
    running = cluster(recycle=3, workers=1)
    first = result(async_task("tests.app.tasks.pid"), wait=30_000)
    assert result(async_task("tests.app.tasks.pid"), wait=30_000) == first
    assert running.view().spares == [None]  # one task left, but none in hand: an idle cluster keeps no replacement
    ids = async_many("tests.app.tasks.span", [0.5] * 3)
    wait_until(lambda: running.view().spares[0] is not None)  # asked as its last task started
    spare = running.view().spares[0].pid
    assert running.view().workers[0].pid == first and spare != first
    spans = sorted((result(task_id, wait=30_000) for task_id in ids), key=lambda span: span[1])
    assert [pid for pid, _, _ in spans] == [first, spare, spare]
    # One worker: no task started before the one before it ended, the old worker's last one included.
    assert all(later[1] >= earlier[2] for earlier, later in zip(spans, spans[1:]))
    wait_until(lambda: running.view().workers[0].pid == spare)


def test_the_sentinel_starts_a_replacement_only_for_the_worker_that_asked(cluster):
    running = cluster(workers=1)
    notices = running.sentinel.notice_w  # this process's end of the sentinel's notice pipe
    worker = running.view().workers[0]
    # Connected first, as a worker that asks for its replacement is: a replacement that reached
    # the pusher before the worker it replaces would be taken for the worker.
    assert result(async_task("tests.app.tasks.pid"), wait=30_000) == worker.pid
    # A worker that already went (its pid is not the running one's), an index out of range, noise.
    os.write(notices, f"0 {worker.pid + 1}\n7 {worker.pid}\nnonsense\n".encode())
    time.sleep(0.5)  # the sentinel reads the pipe as soon as it is written
    assert running.view().spares == [None]
    before = {child.pid for child in psutil.Process(running.pid).children()}
    os.write(notices, f"0 {worker.pid}\n0 {worker.pid}\n".encode())  # asked twice, in one read
    wait_until(lambda: running.view().spares[0] is not None)
    spare = running.view().spares[0]
    time.sleep(0.5)
    assert running.view().spares[0].pid == spare.pid and running.view().workers[0].pid == worker.pid
    assert [c.pid for c in psutil.Process(running.pid).children() if c.pid not in before] == [spare.pid]  # once
    assert result(async_task("tests.app.tasks.pid"), wait=30_000) == worker.pid  # the spare stands by
    running.stop()  # with a spare standing by
    last = running.view().known[spare.pid]  # as the sentinel saw it last, having waited for it
    assert not last.alive and last.exitcode == 0


@pytest.mark.parametrize("preload", [True, False])
def test_a_recycled_worker_starts_with_the_task_modules_run_so_far(cluster, preload):
    """The sentinel imports a task's module once a worker ran it; later workers fork with it."""
    sys.modules.pop("tests.app.preloaded", None)  # the sentinel process forks from this one
    running = cluster(recycle=1, workers=1, preload_tasks=preload)
    first_importer, first_worker = result(async_task("tests.app.preloaded.importer"), wait=30_000)
    assert first_importer == first_worker  # nobody had imported it before the first worker
    later_importer, later_worker = result(async_task("tests.app.preloaded.importer"), wait=30_000)
    assert later_worker != first_worker  # recycled after one task
    assert later_importer == (running.pid if preload else later_worker)
    sys.modules.pop("tests.app.preloaded", None)


def test_save_limit_prunes_successes_keeps_failures(cluster):
    cluster(save_limit=5)
    for i in range(12):
        async_task("tests.app.tasks.add", i, 0, group="pruned")
    failed = async_task("tests.app.tasks.fail")
    wait_until(lambda: Failure.objects.filter(id=failed).exists())
    wait_until(lambda: queue_size() == 0 and Success.objects.count() <= 5)
    assert Success.objects.count() == 5


def test_graceful_stop_finishes_running_tasks(cluster):
    running = cluster(workers=2)
    ids = [async_task("tests.app.tasks.mark_then_sleep", f"g{i}", 1.0, i) for i in range(2)]
    wait_until(lambda: Hooked.objects.filter(task_id__in=["g0", "g1"]).count() == 2)
    running.stop()
    assert sorted(result(i) for i in ids) == [0, 1]
    assert queue_size() == 0 and not OrmQ.objects.exists()


def test_graceful_stop_hands_back_unstarted_tasks(cluster):
    """The stop comes while the one worker runs the first task: the five behind it never start.

    A new cluster knows no run times yet, so it sends a worker one job at a time
    and none of the five can be queued in the worker behind the first.
    """
    running = cluster(workers=1, queue_limit=10)
    first = async_task("tests.app.tasks.mark_then_sleep", "h0", 2.0, "first")
    waiting = [async_task("tests.app.tasks.add", i, 0) for i in range(5)]
    wait_until(lambda: Hooked.objects.filter(task_id="h0").exists())
    asked = time.time()
    running.stop()
    done = fetch(first)
    assert done.result == "first"
    assert done.stopped.timestamp() > asked  # the stop came while the first task ran
    assert [result(w) for w in waiting] == [None] * 5
    assert queue_size() == 5
    assert [fetch(w) for w in waiting] == [None] * 5
    assert [fetch(w, in_flight=True).status for w in waiting] == ["queued"] * 5


def test_killed_worker_task_runs_again(cluster, q_cluster, broker_kind):
    running = cluster(workers=1, retry=2)
    task_id = async_task("tests.app.tasks.mark_then_sleep", "k", 2.0, "done")
    worker = running.view().workers[0]
    wait_until(lambda: queue_size() == 0)
    wait_until(lambda: Hooked.objects.filter(task_id="k").exists())
    os.kill(worker.pid, signal.SIGKILL)
    assert result(task_id, wait=30_000) == "done"
    assert fetch(task_id).attempt_count >= 2


@pytest.mark.slow
def test_a_task_running_three_times_retry_is_delivered_once(cluster, queue_name, redis_client):
    """The pusher renews a running task's lease, so a task that runs 3.5x `retry` is never handed out again.

    Two workers: were the lease let lapse after 1 s, the idle one would be given the task a second time.
    """
    key = f"{queue_name}:runs"
    cluster(workers=2, retry=1.0)
    try:
        task_id = async_task("tests.app.tasks.count_then_sleep", key, 3.5, hook="tests.app.tasks.record_hook")
        task = fetch(task_id, wait=30_000)
        assert (task.success, task.result, task.attempt_count) == (True, 1, 1)
        wait_until(lambda: Hooked.objects.filter(task_id=task_id).exists())
        wait_until(lambda: queue_size() == 0 and get_broker().leased() == 0)
        time.sleep(1.5)  # a second delivery, had there been one, would have started by now
        assert int(redis_client.get(key)) == 1  # ran once
        assert Hooked.objects.filter(task_id=task_id).count() == 1  # its result was saved once
        task = fetch(task_id)
        assert (task.result, task.attempt_count) == (1, 1)
    finally:
        redis_client.delete(key)


def test_signals_reach_cluster_processes(cluster, tmp_path):
    from django_q import signals

    def spawned(proc_name, **_):
        (tmp_path / f"spawn-{proc_name}").touch()

    def executing(func, task, **_):
        (tmp_path / f"pre-{task.id}").touch()

    def executed(task, **_):
        (tmp_path / f"post-{task.id}").touch()

    receivers = [(signals.post_spawn, spawned), (signals.pre_execute, executing), (signals.post_execute, executed)]
    for signal_, receiver in receivers:
        signal_.connect(receiver)
    try:
        cluster(workers=1)  # forked children inherit the receivers
        task_id = async_task("tests.app.tasks.add", 1, 1)
        assert result(task_id, wait=30_000) == 2
        wait_until(lambda: (tmp_path / f"post-{task_id}").exists())
        assert (tmp_path / f"pre-{task_id}").exists()
        names = {p.name for p in tmp_path.iterdir()}
        assert {"spawn-pusher", "spawn-worker-0"} <= names and "spawn-monitor" not in names
    finally:
        for signal_, receiver in receivers:
            signal_.disconnect(receiver)


def test_clients_that_stall_or_die_mid_handshake_do_not_block_new_workers(cluster):
    import socket

    running = cluster(workers=1)
    assert result(async_task("tests.app.tasks.pid"), wait=30_000)
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(running.sentinel.address)  # connects, then never answers the challenge
    dropped = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dropped.connect(running.sentinel.address)
    dropped.close()  # gone before the handshake
    try:
        first = running.view().workers[0].pid
        os.kill(first, signal.SIGKILL)
        # the replacement connects past both and serves
        replacement = result(async_task("tests.app.tasks.pid"), wait=30_000)
        assert isinstance(replacement, int) and replacement != first
    finally:
        stalled.close()


def test_recycling_workers_run_every_task_once(cluster, queue_name, redis_client):
    """A worker that leaves after `recycle` tasks hands back what was sent to it and never ran."""
    # save_limit 0: with the default 100, the first results could be pruned before they are read.
    cluster(recycle=5, workers=2, save_limit=0)
    keys = [f"{queue_name}:once:{i}" for i in range(300)]
    try:
        ids = async_many("tests.app.tasks.incr", [(key,) for key in keys])
        for task_id in ids:
            assert fetch(task_id, wait=30_000) is not None
        runs = [int(v) for v in redis_client.mget(keys)]
        assert [k for k, n in zip(keys, runs) if n != 1] == []
    finally:
        redis_client.delete(*keys)


def test_a_worker_killed_for_a_timeout_loses_no_outcome_of_the_short_tasks_before(cluster, queue_name, redis_client):
    """Short tasks' outcomes travel in batches: those a killed worker had not sent yet run again, and the
    timeout is recorded against the task that ran too long, not against one of them."""
    cluster(workers=1, save_limit=0)
    keys = [f"{queue_name}:short:{i}" for i in range(200)]
    try:
        ids = async_many("tests.app.tasks.incr", [(key,) for key in keys])
        # Holds the GIL: the worker's backstop thread cannot send what waits while it runs.
        hog = async_task("tests.app.tasks.hold_gil", timeout=1)
        ids += async_many("tests.app.tasks.incr", [(key,) for key in keys[:20]])
        failed = fetch(hog, wait=30_000)
        assert not failed.success and "timeout" in failed.result
        for task_id in ids:
            task = fetch(task_id, wait=30_000)
            assert task is not None and task.success, task and task.result
        assert list(Failure.objects.values_list("id", flat=True)) == [hog]
        runs = [int(v) for v in redis_client.mget(keys)]
        assert all(n >= 1 for n in runs)
    finally:
        redis_client.delete(*keys)



def test_a_forked_worker_leaves_what_it_inherited_out_of_its_garbage_collections(cluster):
    # Frozen by the sentinel before the fork: a full collection in the worker
    # would otherwise write to every inherited object, copying its pages.
    cluster(workers=1)
    frozen = result(async_task("gc.get_freeze_count"), wait=30_000)
    # Every object the sentinel had (tens of thousands), not only the few the
    # interpreter freezes at its start (as this process has, frozen nothing).
    assert frozen > gc.get_freeze_count() + 1000
