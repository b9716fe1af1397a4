"""A pusher stepped by hand, for tests/unit/test_pusher.py: fake worker connections, a saver that only
keeps what it is handed, the in-memory broker and a clock of our own.

A `Rig` builds a Pusher that was never started (no socket, no thread),
connects fake workers, puts a `HandedSaver` in place of the saver thread (a
test answers for it with `saved()`), fills the buffer with `fetch()` and
calls `Pusher.step()` with the connections that have something to read, as
`Pusher.wait()` would. The lease thread's decisions are `Leases.step(broker,
now)`, called the same way. Workers' state files are real files in the
test's folder, written with the rig's clock.
"""


from __future__ import annotations

import itertools
import os
import pickle
from collections import deque


from django_q.brokers.memory import MemoryBroker
from django_q.cluster.channels import STATE_LAYOUT, state_path
from django_q.cluster.messages import Batch, DeadLetterNote, Hello, Job, Outcome, Role, Saved
from django_q.cluster.pusher import Pusher
from django_q.cluster.runstate import RunState
from django_q.conf import Config
from django_q.package import TaskPackage, pack

QUEUE = "pusher-unit"
SHORT = 0.0019  # seconds: a short task's run time; 0.02 s of work is 10 of them
LEASE = 30.0


class Clock:
    """Monotonic seconds for the pusher and its leases, and epoch seconds for the broker: one fake time."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeConn:
    """The pusher's end of a connection: what it sends is kept (unpickled), what it reads is queued."""

    def __init__(self) -> None:
        self.inbox: deque[object] = deque()
        self.sent: list[object] = []
        self.eof = False  # the other end closed: recv raises EOFError once the inbox is read
        self.closed = False

    def send_bytes(self, data: bytes) -> None:
        if self.eof:
            raise BrokenPipeError("the other end is gone")
        self.sent.append(pickle.loads(data))

    def recv(self) -> object:
        if self.inbox:
            return self.inbox.popleft()
        raise EOFError

    def close(self) -> None:
        self.closed = True

    @property
    def ready(self) -> bool:
        return bool(self.inbox) or self.eof

    def messages(self) -> list[object]:
        """Everything received, batches unpacked, in order."""
        return [m for sent in self.sent for m in (sent.messages if type(sent) is Batch else (sent,))]


class HandedSaver:
    """Stands in for the saver thread (cluster.saving.Saver): keeps what the pusher hands it, saves nothing."""

    def __init__(self) -> None:
        self.handed: list[list[Outcome | DeadLetterNote]] = []
        self.stopped = False

    def hand(self, messages: list[Outcome | DeadLetterNote]) -> None:
        self.handed.append(list(messages))

    def messages(self) -> list[Outcome | DeadLetterNote]:
        """Everything handed over so far, in order."""
        return [m for batch in self.handed for m in batch]

    def start(self) -> None:
        raise AssertionError("a rig's pusher is never started")

    def stop(self) -> None:
        self.stopped = True

    def join(self, timeout: float) -> None:
        pass


class NotedPublisher:
    """Stands in for the status thread (django_q.status.Publisher): notes that the pusher started it."""

    def __init__(self, *args: object) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        pass


class WorkerConn(FakeConn):
    """A worker's connection: what it said since the pusher last read comes as one message, as send_many sends it."""

    def recv(self) -> object:
        if len(self.inbox) > 1:
            said = Batch(tuple(self.inbox))
            self.inbox.clear()
            return said
        return super().recv()


class FakeWorker:
    """A worker process as the pusher sees it: a connection and a state file."""

    def __init__(self, rig: Rig, pid: int, index: int) -> None:
        self.rig, self.pid, self.index = rig, pid, index
        self.conn = WorkerConn()
        self.state = RunState(state_path(rig.folder, pid), writer=True)
        self.taken = 0

    def jobs(self) -> list[Job]:
        return [m for m in self.conn.messages() if isinstance(m, Job)]

    def write_state(self, running: str | None, timeout: float | None) -> None:
        raw = running.encode() if running else b""
        started = (self.rig.clock.now, self.rig.clock.now) if running else (0.0, 0.0)
        STATE_LAYOUT.pack_into(self.state.map, 0, 0, self.taken, *started, timeout or 0.0, len(raw), raw)

    def start(self, job: Job, timeout: float | None = None) -> None:
        """Take `job` from the queue and run it (as written to the state file)."""
        self.taken += 1
        self.write_state(job.delivery_id, timeout)

    def finish(self, job: Job, took: float = 0.5, success: bool = True) -> Outcome:
        """End `job` and say so to the pusher."""
        self.write_state(None, None)
        now = self.rig.clock.now
        outcome = Outcome(job.delivery_id, task_of(job), success, 3, now - took, now, job.attempts, QUEUE)
        self.conn.inbox.append(outcome)
        return outcome

    def run(self, job: Job, took: float = 0.5) -> Outcome:
        self.start(job)
        return self.finish(job, took)

    def die(self) -> None:
        self.conn.eof = True


def task_of(job: Job) -> TaskPackage:
    from django_q.package import unpack

    return unpack(job.payload, 1 << 24, verified=True)


class Rig:
    """A pusher that was never started, its broker, its workers, its saver, and the signals it sent."""

    def __init__(self, folder: str, **options) -> None:
        self.folder = folder
        self.clock = Clock()
        self.broker = MemoryBroker(QUEUE, LEASE, clock=self.clock)
        self.config = Config(**{"name": QUEUE, "workers": 2, "retry": LEASE, "queue_limit": 100, **options})
        self.signals: list[tuple[int, int]] = []
        self.pusher = Pusher(self.config, os.path.join(folder, "pusher.sock"), broker=self.broker, clock=self.clock,
                             kill=lambda pid, signum: self.signals.append((pid, signum)))
        self.workers: list[FakeWorker] = []
        self.task_ids = itertools.count(1)
        self.saver = HandedSaver()
        self.pusher.saving.saver = self.saver  # type: ignore[assignment]
        # A rig's pusher starts no thread: as far as step() can tell, its lease and status threads are up.
        self.pusher.status = NotedPublisher()  # type: ignore[assignment]
        self.leases()  # the lease thread's first beat: results may go to be saved from now on

    def worker(self, index: int | None = None) -> FakeWorker:
        index = len(self.workers) if index is None else index
        worker = FakeWorker(self, 1000 + len(self.workers), index)
        self.workers.append(worker)
        self.pusher.newcomers.append((worker.conn, Hello(Role.WORKER, worker.pid, index)))
        return worker

    def enqueue(self, count: int = 1, **fields) -> list[str]:
        """Signed packages of `count` tasks, keyed by their task ids; returns the task ids."""
        ids = [f"{next(self.task_ids):032x}" for _ in range(count)]
        for task_id in ids:
            task = TaskPackage(id=task_id, name=f"t{task_id[-4:]}", func="math.floor", args=(1.5,), **fields)
            self.broker.enqueue(pack(task), key=task_id)
        return ids

    def fetch(self) -> None:
        self.pusher.fetcher.fetch(self.broker, self.pusher.fetcher.room_left(), wait=0)

    def step(self) -> None:
        """One pass of the loop, given the connections `wait()` would return."""
        self.pusher.step([conn for conn in self.pusher.slots if conn.ready])

    def to_saver(self) -> list[Outcome | DeadLetterNote]:
        """Step; everything handed to the saver so far.

        The lease thread, beating every second meanwhile, keeps the cluster in touch (Leases.in_touch)."""
        self.pusher.leases.touched = self.clock.now
        self.step()
        return self.saver.messages()

    def saved(self, *delivery_ids: str) -> None:
        """The saver's answer: these are saved (the loop reads it on its next step)."""
        self.pusher.saving.answer(Saved(tuple(delivery_ids)))

    def leases(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        self.pusher.leases.step(self.broker, self.clock.now)

    def warm(self, worker: FakeWorker, count: int = 30) -> None:
        """Enqueue `count` tasks and have `worker` run its first job in SHORT: run times are known to be short."""
        self.enqueue(count)
        self.fetch()
        self.step()
        worker.run(worker.jobs()[0], took=SHORT)
        self.step()

    def other_cluster_gets(self) -> list[str]:
        """What a second cluster on the queue would be handed now."""
        return [d.id for d in MemoryBroker(QUEUE, LEASE, clock=self.clock).dequeue(100, 0)]
