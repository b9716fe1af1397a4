"""Rate limits through real clusters, on both brokers: two clusters of one queue share the limit, every
task runs, and an unlimited function beside a limited one is not held up."""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_q.brokers import close_brokers
from django_q.conf import get_config
from django_q.models import Task
from django_q.tasks import async_many

from .conftest import wait_until

LIMITED = "tests.app.tasks.add"
FREE = "tests.app.tasks.echo_kwargs"
TASKS = 200
PER_SECOND = 20


@pytest.fixture
def limited(q_cluster):
    """The test's Q_CLUSTER with LIMITED at PER_SECOND a second, and every result kept."""
    conf = {**q_cluster, "rate_limits": {LIMITED: f"{PER_SECOND}/s"}, "save_limit": 0}
    with override_settings(Q_CLUSTER=conf):
        close_brokers()
        yield get_config()
        close_brokers()


def _starts(func: str) -> list[float]:
    return sorted(t.started.timestamp() for t in Task.objects.filter(func=func).only("started"))


@pytest.mark.slow
def test_two_clusters_never_start_more_than_the_limit_in_any_second_and_run_everything(cluster, limited):
    async_many(LIMITED, [(i, 1) for i in range(TASKS)])
    async_many(FREE, [() for _ in range(10)])  # behind every limited task in the queue
    first, second = cluster(), cluster()
    wait_until(lambda: Task.objects.filter(func=FREE).count() == 10, timeout=60)
    # Finished without waiting for the limited ones queued before them (about 10 s of them).
    assert Task.objects.filter(func=LIMITED).count() < TASKS / 2
    wait_until(lambda: Task.objects.filter(func=LIMITED).count() >= TASKS, timeout=120)
    first.stop()
    second.stop()

    starts = _starts(LIMITED)
    assert len(starts) == TASKS
    assert sorted(t.result for t in Task.objects.filter(func=LIMITED)) == list(range(1, TASKS + 1))
    # No window of one second holds more than PER_SECOND starts: any PER_SECOND + 1 in a row span a second.
    closest = min(starts[i + PER_SECOND] - starts[i] for i in range(len(starts) - PER_SECOND))
    assert closest >= 1.0, f"{PER_SECOND + 1} starts within {closest:.3f}s"
    workers = {t.worker for t in Task.objects.filter(func=LIMITED)}
    pids = {int(w.rsplit(":", 1)[1]) for w in workers}
    assert pids & set(first.view().known) and pids & set(second.view().known), "both clusters ran some"
    assert all(t.attempt_count == 1 for t in Task.objects.filter(func=LIMITED))
