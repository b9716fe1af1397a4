"""Prometheus metrics, read at scrape time from the broker and the database.

The web process that serves the scrape runs no task, so counters kept in its
own memory would stay at zero. Instead every scrape reads:

- the status each running cluster publishes (django_q.status): per-cluster
  counters of tasks enqueued, started, succeeded, failed, retried and
  dead-lettered, and a task duration histogram, labelled with the queue and
  the cluster id. They start from zero when a cluster starts, like any
  process's counters; Prometheus's rate() and increase() handle that;
- the broker: queue depth, leased packages, clusters and busy workers;
- the database: stored successes and failures, dead letters, schedules;
- with `Q_CLUSTER["metrics_functions"]` on (in the clusters, which count, and
  in the web process, which reports): per function, tasks succeeded and
  failed and a run-time histogram, labelled with queue, cluster and function.
  Off by default: every task function becomes a label value.

Add `path("metrics/", include("django_q.urls"))` to a project's urls. The
view answers staff sessions and requests bearing
`Authorization: Bearer <Q_CLUSTER["metrics_token"]>`; anyone else gets 403,
since queue names and cluster ids tell an attacker where to aim.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator, Sequence

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

from .brokers import get_broker
from .conf import get_config
from .exceptions import BrokerError
from .extras import missing
from .models import DeadLetter, Schedule, Task
from .status import DURATION_BUCKETS, ClusterStatus, cluster_statuses

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
except ImportError as exc:  # django_q.urls imports this module: the project's URLconf fails, saying why
    raise missing("prometheus_client", "django_q.urls (the Prometheus metrics)") from exc

logger = logging.getLogger("django_q")

COUNTERS = (
    ("enqueued", "Tasks a cluster received for their first delivery"),
    ("started", "Tasks a cluster's workers started"),
    ("succeeded", "Tasks that returned"),
    ("failed", "Tasks that raised, timed out or ran out of attempts"),
    ("retried", "Deliveries of a task after its first (lapsed lease, worker lost, failure run again)"),
    ("dead_lettered", "Packages set aside unrun (bad signature, corrupt, too large)"),
)
LABELS = ["queue", "cluster"]


class QueueCollector:
    """Collects the metrics of `queues` (the configured queues by default) at each scrape."""

    def __init__(self, queues: Sequence[str] | None = None) -> None:
        self.queues = tuple(queues) if queues else None

    def collect(self) -> Iterator[Metric]:
        config = get_config()
        counters = {key: CounterMetricFamily(f"django_q_tasks_{key}", text, labels=LABELS) for key, text in COUNTERS}
        duration = HistogramMetricFamily(
            "django_q_task_duration_seconds", "Run time of finished tasks, per cluster", labels=LABELS
        )
        up = GaugeMetricFamily("django_q_broker_up", "1 if the queue's broker answered this scrape", labels=["queue"])
        depth = GaugeMetricFamily("django_q_queue_depth", "Packages waiting to be handed out", labels=["queue"])
        leased = GaugeMetricFamily("django_q_queue_leased", "Packages handed out and not yet acked", labels=["queue"])
        clusters = GaugeMetricFamily("django_q_clusters", "Running clusters", labels=["queue"])
        workers = GaugeMetricFamily("django_q_workers", "Worker processes of running clusters", labels=LABELS)
        busy = GaugeMetricFamily("django_q_workers_busy", "Workers running a task", labels=LABELS)
        every: list[tuple[str, ClusterStatus]] = []  # each cluster once, with the queue it is reported under
        counted: set[str] = set()
        for queue in self.queues or config.served_queues:
            broker = get_broker(queue, config)
            try:
                statuses = cluster_statuses(queue, config)
                depth.add_metric([queue], broker.size())
                leased.add_metric([queue], broker.leased())
            except BrokerError as exc:
                logger.warning("metrics: broker of queue %s did not answer: %s", queue, exc)
                up.add_metric([queue], 0)
                continue
            up.add_metric([queue], 1)
            clusters.add_metric([queue], len(statuses))
            for status in statuses:
                # A cluster serving several queues publishes one status to each: its counters are
                # reported once, under the first of them collected here.
                if status.id in counted:
                    continue
                counted.add(status.id)
                every.append((queue, status))
                labels = [queue, status.id]
                for key, _ in COUNTERS:
                    counters[key].add_metric(labels, getattr(status.counters, key))
                duration.add_metric(labels, _buckets(status), status.counters.duration_sum)
                workers.add_metric(labels, len(status.workers))
                busy.add_metric(labels, status.running)
        yield from counters.values()
        yield from (duration, up, depth, leased, clusters, workers, busy)
        if config.metrics_functions:
            yield from per_function(every)

        stored = GaugeMetricFamily("django_q_stored_tasks", "Task results in the database", labels=["outcome"])
        by_outcome = dict(Task.objects.values_list("success").annotate(n=Count("id")).order_by())
        stored.add_metric(["success"], by_outcome.get(True, 0))
        stored.add_metric(["failure"], by_outcome.get(False, 0))
        yield stored
        yield GaugeMetricFamily("django_q_dead_letters", "Dead letters kept in the database", DeadLetter.objects.count())
        yield GaugeMetricFamily("django_q_schedules", "Schedules in the database", Schedule.objects.count())


def per_function(every: list[tuple[str, ClusterStatus]]) -> Iterator[Metric]:
    """Per function of each cluster: tasks succeeded and failed, and the run-time histogram."""
    labels = [*LABELS, "function"]
    succeeded = CounterMetricFamily("django_q_function_tasks_succeeded", "Tasks of a function that returned",
                                    labels=labels)
    failed = CounterMetricFamily("django_q_function_tasks_failed", "Tasks of a function that failed", labels=labels)
    duration = HistogramMetricFamily("django_q_function_duration_seconds", "Run time of a function's finished tasks",
                                     labels=labels)
    for queue, status in every:
        for func, counts in sorted(status.counters.functions.items()):
            values = [queue, status.id, func]
            succeeded.add_metric(values, counts[0])
            failed.add_metric(values, counts[1])
            duration.add_metric(values, _cumulative(counts[3:]), counts[2])
    yield from (succeeded, failed, duration)


def _buckets(status: ClusterStatus) -> list[tuple[str, float]]:
    """The cluster's per-bucket counts as Prometheus's cumulative buckets."""
    return _cumulative(status.counters.duration_buckets)


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts over DURATION_BUCKETS as Prometheus's cumulative buckets."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), counts):
        total += count
        out.append((bound, total))
    return out


def may_read(request: HttpRequest) -> bool:
    """Whether the request bears the configured metrics token, or comes from an active staff session."""
    token = get_config().metrics_token
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    user = getattr(request, "user", None)  # absent without Django's AuthenticationMiddleware
    return bool(user is not None and user.is_active and user.is_staff)


def metrics(request: HttpRequest, queues: Sequence[str] | None = None) -> HttpResponse:
    """The Prometheus text exposition of `queues` (the configured queues by default), for staff or the token.

    Pass other queues in the url's kwargs: `path("metrics/", metrics, {"queues": ["default", "long"]})`.
    """
    if not may_read(request):
        return HttpResponseForbidden("metrics: log in as staff, or send Authorization: Bearer <metrics_token>\n",
                                     content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queues))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
