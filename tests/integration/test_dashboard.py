"""The dashboard's data against a known workload run by a real cluster, on each broker."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from django_q.models import Task
from django_q.status import RUNNING, cluster_statuses
from django_q.tasks import async_task

from .conftest import wait_until

DATA = "admin:django_q_dashboard_data"
OK, BAD, SLOW = 12, 4, 3  # successes of add, failures of fail, successes of sleep(0.3)


@pytest.fixture
def viewer(client):
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q",
                                                        codename="view_success"))
    client.force_login(user)
    return client


def queue_data(client) -> dict:
    response = client.get(reverse(DATA))
    assert response.status_code == 200
    (queue,) = response.json()["queues"]
    assert queue["error"] is None, queue["error"]
    return queue


@pytest.mark.slow
def test_the_data_endpoint_counts_a_known_workload(cluster, viewer, q_cluster):
    cluster()
    wait_until(lambda: [s for s in cluster_statuses() if s.state == RUNNING], timeout=30)
    for i in range(OK):
        async_task("tests.app.tasks.add", i, 1)
    for _ in range(BAD):
        async_task("tests.app.tasks.fail", "on purpose")
    for _ in range(SLOW):
        async_task("tests.app.tasks.sleep", 0.3)
    wait_until(lambda: Task.objects.count() == OK + BAD + SLOW, timeout=60)

    # The saver writes its history every few seconds, and the status comes every 2 s.
    def counted():
        queue = queue_data(viewer)
        done = sum(w["tasks"] for c in queue["clusters"] for w in c["workers"])
        return queue if queue["totals"]["started"] == OK + BAD + SLOW and done == OK + BAD + SLOW else None

    queue = wait_until(counted, timeout=40, pause=0.5)
    totals = queue["totals"]
    assert (totals["succeeded"], totals["failed"], totals["retried"]) == (OK + SLOW, BAD, 0)
    assert totals["wait_p50"] is not None and totals["wait_p95"] >= totals["wait_p50"]
    funcs = {f["func"]: f for f in queue["functions"]}
    assert set(funcs) == {"tests.app.tasks.add", "tests.app.tasks.fail", "tests.app.tasks.sleep"}
    assert (funcs["tests.app.tasks.add"]["runs"], funcs["tests.app.tasks.add"]["failed"]) == (OK, 0)
    assert (funcs["tests.app.tasks.fail"]["runs"], funcs["tests.app.tasks.fail"]["failure_rate"]) == (BAD, 1.0)
    sleeps = funcs["tests.app.tasks.sleep"]
    assert sleeps["runs"] == SLOW and 0.25 < sleeps["p50"] <= sleeps["p95"] <= 1.0  # bucket (0.25, 0.5], or next
    assert funcs["tests.app.tasks.add"]["p95"] < 0.25
    # Per second, minute by minute: the counts come back when multiplied by each minute's span.
    assert sum(queue["started"]) > 0 and all(v is None or v >= 0 for v in queue["depth"])
    (status,) = queue["clusters"]
    assert status["state"] == "running" and len(status["workers"]) == 2
    assert all(w["rss"] and w["rss"] > 1000 for w in status["workers"])  # KiB

    # Pruned results leave no hole: the history does not come from the Task table.
    Task.objects.all().delete()
    again = queue_data(viewer)
    assert again["totals"]["started"] == OK + BAD + SLOW
    assert {f["func"]: f["runs"] for f in again["functions"]} == {f: funcs[f]["runs"] for f in funcs}
