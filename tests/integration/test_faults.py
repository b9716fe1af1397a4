"""The cluster goes on through bad packages and dying workers."""

from django.test import override_settings

from django_q.brokers import get_broker
from django_q.models import DeadLetter, Failure
from django_q.names import new_id
from django_q.package import TaskPackage, pack
from django_q.tasks import async_task, fetch, queue_size, result

from .conftest import wait_until


def test_bad_packages_are_set_aside_and_never_run(cluster, tmp_path):
    cluster()
    broker = get_broker()
    marker = tmp_path / "ran"
    forged_task = TaskPackage(id=new_id(), name="forged", func="pathlib.Path.touch", args=(marker,))
    with override_settings(SECRET_KEY="someone-elses-key"):
        forged = pack(forged_task)
    good = pack(TaskPackage(id=new_id(), name="good", func="math.copysign", args=(1, -1)))
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    broker.enqueue(b"\x80\x04not a package")
    broker.enqueue(forged)
    broker.enqueue(bytes(flipped))
    after = async_task("tests.app.tasks.add", 20, 22)
    assert result(after, wait=30_000) == 42
    wait_until(lambda: DeadLetter.objects.count() == 3)
    reasons = " ".join(DeadLetter.objects.values_list("reason", flat=True))
    assert "signature" in reasons and "header" in reasons
    wait_until(lambda: queue_size() == 0 and broker.leased() == 0)
    assert not marker.exists()


def test_task_killing_its_worker_fails_after_max_attempts(cluster):
    cluster(max_attempts=2, workers=1)
    doomed = async_task("tests.app.tasks.die")
    task = fetch(doomed, wait=30_000)
    assert not task.success and "worker lost after 2 attempts" in task.result
    assert task.attempt_count == 2
    assert Failure.objects.filter(id=doomed).exists()
    assert result(async_task("tests.app.tasks.add", 1, 1), wait=30_000) == 2


def test_max_rss_replaces_a_bloated_worker(cluster):
    cluster(max_rss=200_000, workers=1)  # 200 MB
    first = result(async_task("tests.app.tasks.grow", 300_000), wait=30_000)
    second = result(async_task("tests.app.tasks.pid"), wait=30_000)
    assert first and second and first != second


def test_client_dying_in_handshake_does_not_stop_new_workers_joining(cluster):
    import os
    import signal
    import socket

    running = cluster(workers=1)
    assert result(async_task("tests.app.tasks.add", 1, 1), wait=30_000) == 2
    for _ in range(3):  # connect and vanish, as a worker killed while joining does
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(running.sentinel.address)
        sock.close()
    os.kill(running.view().workers[0].pid, signal.SIGKILL)
    assert result(async_task("tests.app.tasks.add", 2, 2), wait=30_000) == 4


def test_task_saved_but_not_acked_is_acked_on_redelivery_not_run_again(cluster, redis_client, queue_name):
    """A cluster died between saving a result and acking it: the next one must not run the task again."""
    import time
    from dataclasses import replace

    from django_q.cluster.messages import Outcome
    from django_q.recorder import Recorder
    from django_q.conf import get_config
    from django_q.package import unpack

    key = f"{queue_name}:runs"
    task_id = async_task("tests.app.tasks.incr", key)
    dying = replace(get_config(), retry=0.5)  # the lease of the cluster that will "die"
    (delivery,) = get_broker(config=dying).dequeue(1, 5)
    task = unpack(delivery.payload, dying.package_limit)
    now = time.time()
    Recorder(dying).record([Outcome(delivery.id, task, True, "saved before the crash", now, now, 1, "gone")])
    time.sleep(0.6)  # its lease lapses: no ack ever came

    cluster()
    wait_until(lambda: queue_size() == 0 and get_broker().leased() == 0)
    assert redis_client.get(key) is None  # never ran again
    assert result(task_id) == "saved before the crash"
    redis_client.delete(key)
