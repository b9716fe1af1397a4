"""The Prometheus endpoint, scraped through the test client while a real cluster runs tasks."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from prometheus_client.parser import text_string_to_metric_families

from django_q.models import DeadLetter
from django_q.status import RUNNING, cluster_statuses
from django_q.tasks import async_task, result

from .conftest import wait_until


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of the endpoint, read by a staff session, as {(name, sorted labels): value}."""
    client.force_login(User.objects.get_or_create(username="prometheus", defaults={"is_staff": True})[0])
    response = client.get("/django_q/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scrape_reports_what_the_cluster_did(cluster, client, q_cluster):
    running = cluster()
    wait_until(lambda: any(s.state == RUNNING for s in cluster_statuses()), timeout=30)
    ids = [async_task("tests.app.tasks.sleep", 0.3, i) for i in range(4)]
    failing = async_task("tests.app.tasks.fail")
    assert [result(i, wait=20_000) for i in ids] == [0, 1, 2, 3]
    wait_until(lambda: result(failing) is not None, timeout=15)
    DeadLetter.objects.create(broker_id="x", queue=q_cluster["name"], payload=b"junk", reason="test")

    def published():
        statuses = cluster_statuses()
        return statuses and statuses[0].counters.succeeded == 4 and statuses[0].counters.failed == 1

    wait_until(published, timeout=10)
    samples = scrape(client)
    queue, cluster_id = q_cluster["name"], running.sentinel.identity.id
    labels = (("cluster", cluster_id), ("queue", queue))
    assert samples[("django_q_tasks_enqueued_total", labels)] == 5
    assert samples[("django_q_tasks_started_total", labels)] == 5
    assert samples[("django_q_tasks_succeeded_total", labels)] == 4
    assert samples[("django_q_tasks_failed_total", labels)] == 1
    assert samples[("django_q_tasks_retried_total", labels)] == 0
    assert samples[("django_q_tasks_dead_lettered_total", labels)] == 0
    assert samples[("django_q_task_duration_seconds_count", labels)] == 5
    assert samples[("django_q_task_duration_seconds_sum", labels)] >= 1.2  # four tasks slept 0.3 s
    # The buckets are cumulative: none of the sleeps fits in 0.25 s, all of them in 0.5 s.
    le = dict(labels)
    assert samples[("django_q_task_duration_seconds_bucket", tuple(sorted({**le, "le": "0.25"}.items())))] <= 1
    assert samples[("django_q_task_duration_seconds_bucket", tuple(sorted({**le, "le": "+Inf"}.items())))] == 5
    assert samples[("django_q_queue_depth", (("queue", queue),))] == 0
    assert samples[("django_q_broker_up", (("queue", queue),))] == 1
    assert samples[("django_q_clusters", (("queue", queue),))] == 1
    assert samples[("django_q_workers", labels)] == 2
    assert samples[("django_q_stored_tasks", (("outcome", "success"),))] == 4
    assert samples[("django_q_stored_tasks", (("outcome", "failure"),))] == 1
    assert samples[("django_q_dead_letters", ())] == 1
    assert not any(name.startswith("django_q_function_") for name, _ in samples)  # metrics_functions is off


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_metrics_functions_adds_per_function_counters_and_histogram(cluster, client, q_cluster, settings):
    settings.Q_CLUSTER = {**q_cluster, "metrics_functions": True}
    running = cluster()
    wait_until(lambda: any(s.state == RUNNING for s in cluster_statuses()), timeout=30)
    ids = [async_task("tests.app.tasks.sleep", 0.3, i) for i in range(2)] + [async_task("tests.app.tasks.add", 1, 2)]
    failing = [async_task("tests.app.tasks.fail") for _ in range(2)]
    assert [result(i, wait=20_000) for i in ids] == [0, 1, 3]
    wait_until(lambda: all(result(f) is not None for f in failing), timeout=15)
    wait_until(lambda: cluster_statuses() and cluster_statuses()[0].counters.failed == 2, timeout=10)
    samples = scrape(client)

    def sample(name: str, func: str, **extra: str) -> float:
        labels = {"cluster": running.sentinel.identity.id, "queue": q_cluster["name"], "function": func, **extra}
        return samples[(name, tuple(sorted(labels.items())))]

    sleep, add, fail = "tests.app.tasks.sleep", "tests.app.tasks.add", "tests.app.tasks.fail"
    assert [sample("django_q_function_tasks_succeeded_total", f) for f in (sleep, add, fail)] == [2, 1, 0]
    assert [sample("django_q_function_tasks_failed_total", f) for f in (sleep, add, fail)] == [0, 0, 2]
    assert sample("django_q_function_duration_seconds_count", sleep) == 2
    assert sample("django_q_function_duration_seconds_sum", sleep) >= 0.6
    assert sample("django_q_function_duration_seconds_bucket", sleep, le="0.25") == 0
    assert sample("django_q_function_duration_seconds_bucket", add, le="0.25") == 1


@pytest.mark.parametrize("broker_kind", ["orm"], indirect=True)
def test_scrape_counts_the_queue_and_dead_letters(cluster, client, q_cluster):
    for _ in range(3):
        async_task("tests.app.tasks.add", 1, 1)
    samples = scrape(client)
    queue = q_cluster["name"]
    assert samples[("django_q_queue_depth", (("queue", queue),))] == 3
    assert samples[("django_q_clusters", (("queue", queue),))] == 0
    assert not any(name == "django_q_tasks_enqueued_total" for name, _ in samples)

    from django_q.brokers import get_broker

    get_broker().enqueue(b"forged package")
    running = cluster()
    wait_until(lambda: DeadLetter.objects.filter(queue=queue).exists(), timeout=30)
    wait_until(lambda: (s := cluster_statuses()) and s[0].counters.dead_lettered == 1 and s[0].done == 3, timeout=10)
    samples = scrape(client)
    labels = (("cluster", running.sentinel.identity.id), ("queue", queue))
    assert samples[("django_q_tasks_dead_lettered_total", labels)] == 1
    assert samples[("django_q_tasks_enqueued_total", labels)] == 4
    assert samples[("django_q_queue_depth", (("queue", queue),))] == 0
