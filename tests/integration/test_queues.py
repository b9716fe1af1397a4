"""One cluster serving several queues (Q_CLUSTER['queues']), on both brokers: order, leases, retries, cancels."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

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
    # All acked: an ack follows its result's save, so the last one may come just after fetch() saw it.
    wait_until(lambda: all(get_broker(q).size() == 0 and get_broker(q).leased() == 0 for q in queues))


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
    wait_until(lambda: all(get_broker(q).leased() == 0 for q in queues))  # each acked in its queue, after its save


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


def test_qinfo_qmonitor_metrics_and_the_admin_show_each_queue(cluster, q_cluster, queues, client,
                                                             django_user_model):
    high, default, low = queues
    with override_settings(Q_CLUSTER={**q_cluster, "queues": list(queues)}):
        async_task("tests.app.tasks.add", 1, 1, cluster=high)
        async_task("tests.app.tasks.add", 1, 2, cluster=high)
        async_task("tests.app.tasks.add", 1, 3, cluster=low)
        info = command("qinfo")
        assert f"queues:        {high}, {default}, {low}\n" in info
        assert f"queued:        3 ({high} 2, {default} 0, {low} 1)\n" in info
        cluster(workers=1)  # Q_CLUSTER['queues'] above
        wait_until(lambda: get_broker(high).size() + get_broker(low).size() == 0 and [
            s for s in cluster_statuses(low) if s.state == RUNNING and s.counters.succeeded == 3])
        info = command("qinfo")
        assert "clusters:      1\n" in info and f"queued:        0 ({high} 0, {default} 0, {low} 0)\n" in info
        assert len(command("qinfo", "--ids").split()) == 1
        monitor = command("qmonitor", "--run-once")
        assert f"queues {high}, {default}, {low}" in monitor
        assert monitor.count(" idle ") == 1  # its one worker, once: the cluster is not listed once per queue
        samples = scrape(client, django_user_model)
        assert [samples[("django_q_clusters", (("queue", q),))] for q in queues] == [1, 1, 1]
        assert [samples[("django_q_queue_depth", (("queue", q),))] for q in queues] == [0, 0, 0]
        succeeded = [v for (name, _), v in samples.items() if name == "django_q_tasks_succeeded_total"]
        assert succeeded == [3]  # counted once, not once per queue the cluster serves
        page = client.get("/admin/django_q/inflight/").content.decode()
        assert all(f"Cluster {q}" in page for q in queues)
        assert page.count("0 waiting, 0 handed out; served by 1 cluster(s)") == 3


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def scrape(client, django_user_model) -> dict:
    """Every sample of the metrics endpoint, read by a superuser's session, as {(name, sorted labels): value}."""
    client.force_login(django_user_model.objects.create_superuser("queues-admin", "q@example.com", "pw"))
    text = client.get("/django_q/metrics/").content.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_bad_package_is_a_dead_letter_of_its_own_queue(cluster, queues):
    from django_q.models import DeadLetter

    high, default, low = queues
    cluster(queues=queues)
    broker_id = get_broker(low).enqueue(b"\x80\x04not a package")
    wait_until(lambda: DeadLetter.objects.exists())
    letter = DeadLetter.objects.get()
    assert (letter.queue, letter.broker_id) == (low, broker_id)  # the id within its queue
    wait_until(lambda: get_broker(low).leased() == 0 and get_broker(low).size() == 0)  # acked there
