"""Cluster status: what each running cluster publishes through its broker, and how to read it.

The pusher owns the record (it knows every worker's job and every unsaved
result). A thread of its own, with its own broker, publishes a `ClusterStatus`
as JSON every PERIOD seconds with a time to live of TTL; a cluster that dies
stops refreshing it and its entry lapses within TTL seconds. A graceful stop
removes the entry at once.

Counters (`Counters`) start at zero when the pusher starts and only grow while
it lives, like any Prometheus counter of one process: a restarted pusher or
cluster starts again from zero. Per-function counters are kept only with
`metrics_functions` on (their labels can be many).

The publisher also measures each worker's memory (RSS) and CPU with psutil
(the [monitor] extra; without it they are None) once per PERIOD, and the cluster's finished tasks per second over RATE_SPAN
seconds: in its own thread, off the pusher's loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from django.db import connections

from .backoff import Outage
from .brokers import cluster_broker, get_broker
from .conf import Config, get_config
from .context import Progress
from .counters import DURATION_BUCKETS, Counters, Tally
from .extras import installed
from .exceptions import BrokerError, PackageError
from .models import DeadLetter, Schedule, Task
from .names import Identity
from .package import unpack

MEASURED = installed("psutil")  # the workers' RSS and CPU: psutil comes with the [monitor] extra
if TYPE_CHECKING or MEASURED:
    import psutil

logger = logging.getLogger("django_q")

PERIOD = 2.0  # seconds between two publications of a cluster's status
TTL = 3 * PERIOD  # seconds an entry outlives its last publication
STOP_PATIENCE = 2.0  # seconds a stopping pusher waits for its entry to be removed
RATE_SPAN = 10.0  # seconds the published tasks-per-second rate is taken over

STARTING, RUNNING, STOPPING = "starting", "running", "stopping"

@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One connected worker and the task it runs (None when idle)."""

    index: int
    pid: int
    task_id: str | None = None
    task_name: str | None = None
    started: float | None = None  # epoch seconds the current task started
    progress: dict | None = None  # the current task's last progress report: done, total, note
    rss: int | None = None  # KiB of resident memory; None if it could not be read
    cpu: float | None = None  # percent of one CPU since the previous publication
    tasks: int = 0  # tasks it finished since it connected


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """One cluster's published status."""

    id: str
    host: str
    pid: int
    name: str
    state: str  # STARTING, RUNNING or STOPPING
    workers: tuple[WorkerStatus, ...]
    queued: int  # packages waiting in the broker; -1 if the broker did not answer
    done: int  # tasks that succeeded since the cluster started
    failed: int
    started: float  # epoch seconds
    updated: float  # epoch seconds of this publication
    counters: Counters = field(default_factory=Counters)
    rate: float = 0.0  # tasks finished per second over the last RATE_SPAN seconds
    queues: tuple[str, ...] = ()  # the queues it serves, in order (`queued` is their sum)

    @property
    def rss(self) -> int:
        """KiB of resident memory of its workers, summed."""
        return sum(w.rss or 0 for w in self.workers)

    @property
    def uptime(self) -> float:
        """Seconds since the cluster started, as of now."""
        return max(0.0, time.time() - self.started)

    @property
    def running(self) -> int:
        """Workers running a task."""
        return sum(1 for w in self.workers if w.task_id or w.task_name)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ClusterStatus:
        """Parse a published status; keys this version does not know are ignored."""
        raw = json.loads(data)
        workers = tuple(WorkerStatus(**_known(WorkerStatus, w)) for w in raw.get("workers", ()))
        counters = _known(Counters, raw.get("counters") or {})
        counters["duration_buckets"] = tuple(counters.get("duration_buckets") or Counters().duration_buckets)
        values = _known(cls, raw)
        values.update(workers=workers, counters=Counters(**counters), queues=tuple(raw.get("queues") or ()))
        return cls(**values)


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def cluster_statuses(name: str | None = None, config: Config | None = None) -> list[ClusterStatus]:
    """The statuses of the running clusters of queue `name` (the configured one by default), by start."""
    config = config or get_config()
    out = []
    for data in get_broker(name or config.name, config).statuses():
        try:
            out.append(ClusterStatus.from_json(data))
        except (ValueError, TypeError) as exc:
            logger.warning("unreadable cluster status in queue %s: %s", name or config.name, exc)
    return sorted(out, key=lambda s: (s.started, s.id))


# What the pusher hands the publisher each period: whether it is stopping, and
# its workers (index, pid, running package or None, start time, progress, tasks
# finished); the publisher adds the rest.
Snapshot = tuple[bool, list[tuple[int, int, Any, float | None, Progress | None, int]]]


class Publisher(threading.Thread):
    """Publishes the status every PERIOD seconds until `stop()`, then removes it."""

    def __init__(self, config: Config, identity: Identity, snapshot: Callable[[], Snapshot], tally: Tally) -> None:
        super().__init__(name="django_q-status", daemon=True)
        self.config = config
        self.identity = identity
        self.snapshot = snapshot
        self.tally = tally
        self.stopping = threading.Event()
        self._names: dict[str, tuple[str | None, str | None]] = {}  # delivery id -> task id, name
        self._processes: dict[int, psutil.Process] = {}  # pid -> its Process, which keeps CPU times between calls
        self._finished: deque[tuple[float, int]] = deque()  # (monotonic time, tasks finished) of each build
        self._all_connected = False  # every worker has been connected once: RUNNING from then on
        # No pause of its own (it publishes every PERIOD) and no line when it goes through again.
        self.outage = Outage(logger, "cluster status not published: %s", level=logging.WARNING)

    def stop(self) -> None:
        """Stop publishing and remove the entry (waits up to STOP_PATIENCE seconds)."""
        self.stopping.set()
        if self.is_alive():
            self.join(STOP_PATIENCE)

    def run(self) -> None:
        broker = cluster_broker(self.config)  # published to every queue it serves
        try:
            while True:
                self._call(lambda: broker.publish_status(self.identity.id, self.build(broker).to_json(), TTL))
                if self.stopping.wait(PERIOD):
                    break
            self._call(lambda: broker.remove_status(self.identity.id))
        finally:
            broker.close()
            connections.close_all()

    def _call(self, publish: Callable[[], None]) -> None:
        try:
            publish()
        except BrokerError as exc:
            self.outage.failed(exc)
            return
        except Exception:
            # Never let a status bug take the pusher down with it.
            logger.exception("cluster status not published")
            return
        self.outage.recovered()

    def build(self, broker: Any) -> ClusterStatus:
        """The current status: the pusher's snapshot plus the queue size."""
        # The counters before the workers: the pusher frees a worker's slot before it counts the outcome, so
        # a status read in this order never counts as finished a task it shows running.
        counters = self.tally.counters
        stopping, slots = self.snapshot()
        self._all_connected = self._all_connected or len(slots) >= self.config.workers
        state = STOPPING if stopping else RUNNING if self._all_connected else STARTING
        try:
            queued = broker.size()
        except BrokerError:
            queued = -1
        workers = []
        seen = set()
        for index, pid, job, started, progress, tasks in sorted(slots, key=lambda s: s[0]):
            task_id = task_name = None
            if job is not None:
                seen.add(job.id)
                task_id, task_name = self._task_of(job)
            report = progress.as_dict() if job is not None and progress is not None else None
            rss, cpu = self._usage(pid)
            workers.append(WorkerStatus(index, pid, task_id, task_name, started, report, rss, cpu, tasks))
        self._names = {k: v for k, v in self._names.items() if k in seen}
        self._processes = {pid: p for pid, p in self._processes.items() if pid in {s[1] for s in slots}}
        ident = self.identity
        return ClusterStatus(
            id=ident.id, host=ident.host, pid=ident.pid, name=self.config.name, state=state,
            workers=tuple(workers), queued=queued, done=counters.succeeded, failed=counters.failed,
            started=ident.started, updated=time.time(), counters=counters, queues=self.config.served_queues,
            rate=self._rate(counters.succeeded + counters.failed),
        )

    def _usage(self, pid: int) -> tuple[int | None, float | None]:
        """A worker's resident memory (KiB) and CPU percent since the last look (None the first time).

        Both are None without psutil (the [monitor] extra)."""
        if not MEASURED:
            return None, None
        try:
            process = self._processes.get(pid)
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
                process.cpu_percent(None)  # starts its clock: the first reading would be meaningless
                cpu = None
            else:
                cpu = round(process.cpu_percent(None), 1)
            return process.memory_info().rss // 1024, cpu
        except psutil.Error:
            return None, None

    def _rate(self, finished: int) -> float:
        """Tasks finished per second over the last RATE_SPAN seconds (or since the first build)."""
        now = time.monotonic()
        self._finished.append((now, finished))
        while len(self._finished) > 2 and now - self._finished[1][0] >= RATE_SPAN:
            self._finished.popleft()
        then, before = self._finished[0]
        return round((finished - before) / (now - then), 3) if now > then else 0.0

    def _task_of(self, delivery: Any) -> tuple[str | None, str | None]:
        """The task id and name of a running delivery (its package was verified before it ran)."""
        if delivery.id not in self._names:
            try:
                task = unpack(delivery.payload, self.config.package_limit, verified=True)
                self._names[delivery.id] = (task.id, task.name)
            except PackageError:
                self._names[delivery.id] = (None, f"delivery {delivery.id}")
        return self._names[delivery.id]


RECENT = 100  # tasks the mean run time is taken over


@dataclass(frozen=True, slots=True)
class QueueSize:
    """One queue's packages: waiting, and handed out; None if its broker did not answer."""

    name: str
    queued: int | None
    leased: int | None


@dataclass(frozen=True, slots=True)
class Overview:
    """Queues at a glance: their clusters and broker; results, schedules and dead letters of every queue."""

    name: str  # the first queue
    broker: str  # "redis" or "orm"
    clusters: tuple[ClusterStatus, ...]  # of any of the queues, each once
    queued: int | None  # of all the queues; None: a broker did not answer
    leased: int | None
    successes: int
    failures: int
    schedules: int
    dead_letters: int
    mean_run_time: float | None  # seconds, over the last `recent` stored tasks
    recent: int
    queues: tuple[QueueSize, ...] = ()  # each queue, in the order given

    @property
    def running(self) -> int:
        return sum(s.running for s in self.clusters)

    @property
    def workers(self) -> int:
        return sum(len(s.workers) for s in self.clusters)


def look(name: str, config: Config) -> tuple[QueueSize, list[ClusterStatus]]:
    """Queue `name`'s size and the statuses of its clusters; (None sizes, []) if its broker did not answer."""
    broker = get_broker(name, config)
    try:
        return QueueSize(name, broker.size(), broker.leased()), cluster_statuses(name, config)
    except BrokerError as exc:
        logger.warning("broker of queue %s did not answer: %s", name, exc)
        return QueueSize(name, None, None), []


def overview(
    names: str | Sequence[str] | None = None, config: Config | None = None, recent: int = RECENT
) -> Overview:
    """Read everything `qinfo` shows of queue `names` (one name, or several): statuses and sizes from the
    broker, counts from the database."""
    config = config or get_config()
    names = [names or config.name] if names is None or isinstance(names, str) else list(names)
    found: dict[str, ClusterStatus] = {}
    sizes = []
    for name in names:
        size, statuses = look(name, config)
        sizes.append(size)
        for status in statuses:
            found.setdefault(status.id, status)  # a cluster serving several queues is in each
    clusters = tuple(sorted(found.values(), key=lambda s: (s.started, s.id)))
    queued = None if any(q.queued is None for q in sizes) else sum(q.queued for q in sizes)  # type: ignore[misc]
    leased = None if any(q.leased is None for q in sizes) else sum(q.leased for q in sizes)  # type: ignore[misc]
    times = list(Task.objects.order_by("-stopped").values_list("started", "stopped")[:recent])
    mean = sum((b - a).total_seconds() for a, b in times) / len(times) if times else None
    return Overview(
        name=names[0], broker=config.broker_kind, clusters=clusters, queued=queued, leased=leased,
        successes=Task.objects.filter(success=True).count(), failures=Task.objects.filter(success=False).count(),
        schedules=Schedule.objects.count(), dead_letters=DeadLetter.objects.count(),
        mean_run_time=mean, recent=len(times), queues=tuple(sizes),
    )
