"""One cluster serving several queues (Q_CLUSTER['queues']), on both brokers: order, leases, retries, cancels."""

from __future__ import annotations

import pytest

from django_q.brokers import get_broker
from django_q.status import RUNNING, cluster_statuses
from django_q.tasks import async_task, cancel, fetch, result
from tests.app.models import Hooked

from .conftest import wait_until


@pytest.fixture
def queues(q_cluster, queue_name):
    """The queues of this test, in the order the cluster serves them (the configured name in the middle);
    each is purged after."""
    names = (f"{queue_name}-high", queue_name, f"{queue_name}-low")
    yield names
    for name in names:
        get_broker(name).purge()


@pytest.fixture
def key(queue_name, redis_client):
    """A Redis key of this test's own (db 14), deleted after."""
    yield f"{queue_name}:order"
    redis_client.delete(f"{queue_name}:order")


def order(redis_client, key) -> list[str]:
    return [v.decode() for v in redis_client.lrange(key, 0, -1)]


def test_with_one_worker_every_ready_task_of_an_earlier_queue_runs_first(cluster, queues, key, redis_client):
    high, default, low = queues
    sent = [
        (low, "low-a", 0), (default, "default-a", 0), (high, "high-a", 0), (low, "low-b", 90),
        (default, "default-b", 5), (high, "high-b", -5), (low, "low-c", 0), (high, "high-c", 50),
    ]
    ids = [async_task("tests.app.tasks.record_order", key, name, cluster=queue, priority=p)
           for queue, name, p in sent]
    cluster(workers=1, queue_limit=1, queues=queues)
    for task_id in ids:
        assert fetch(task_id, wait=30_000).success
    assert order(redis_client, key) == [
        "high-c", "high-a", "high-b", "default-b", "default-a", "low-b", "low-a", "low-c",
    ]
    assert all(get_broker(q).size() == 0 and get_broker(q).leased() == 0 for q in queues)  # all acked


def test_a_delayed_task_becomes_ready_in_its_own_queue(cluster, queues, key, redis_client):
    high, default, low = queues
    cluster(workers=1, queues=queues)
    delayed = async_task("tests.app.tasks.record_order", key, "high-late", cluster=high, countdown=1)
    first = async_task("tests.app.tasks.record_order", key, "low-now", cluster=low)
    assert fetch(delayed, wait=30_000).success and fetch(first, wait=30_000).success
    assert order(redis_client, key) == ["low-now", "high-late"]


def test_retries_and_cancels_reach_the_queue_of_their_task(cluster, queues):
    high, default, low = queues
    cluster(workers=2, queues=queues)
    flaky = async_task("tests.app.tasks.flaky", f"{low}:flaky", 2, retries=3, retry_delay=0.1, cluster=low)
    running = async_task("tests.app.tasks.catch_everything", "c1", 60, cluster=high)
    wait_until(lambda: Hooked.objects.filter(task_id="c1").exists())
    wait_until(lambda: (task := fetch(running, in_flight=True, cluster=high)) and task.status == "running")
    assert cancel(running, cluster=high) is True
    assert fetch(running, wait=30_000).status == "cancelled"
    task = fetch(flaky, wait=30_000)
    assert (task.status, task.attempt_count) == ("success", 3)
    assert result(async_task("tests.app.tasks.add", 2, 2, cluster=default), wait=30_000) == 4
    assert all(get_broker(q).leased() == 0 for q in queues)


def test_each_queue_sees_the_cluster_and_a_stop_hands_back_what_did_not_start(cluster, queues):
    high, default, low = queues
    running = cluster(workers=1, queue_limit=10, queues=queues)
    statuses = wait_until(lambda: [s for s in cluster_statuses(low) if s.state == RUNNING])
    assert statuses[0].queues == queues
    assert [s.id for s in cluster_statuses(high)] == [s.id for s in cluster_statuses(default)] == [statuses[0].id]
    blocker = async_task("tests.app.tasks.mark_then_sleep", "b", 1.0, cluster=high)
    wait_until(lambda: Hooked.objects.filter(task_id="b").exists())
    held = [async_task("tests.app.tasks.add", i, i, cluster=q) for i, q in enumerate((low, default, low))]
    wait_until(lambda: all(get_broker(q).size() == 0 for q in queues))  # fetched into the pusher's buffer
    running.stop()
    assert fetch(blocker).success
    assert all(fetch(task_id) is None for task_id in held)
    assert (get_broker(low).size(), get_broker(default).size()) == (2, 1)  # back in their own queues
    assert cluster_statuses(low) == []
