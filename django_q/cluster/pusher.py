"""The pusher: owns every lease the cluster holds, from dequeue to ack.

Workers and the monitor connect to the pusher's local socket. The pusher
hands each idle worker one verified job, forwards finished outcomes to the
monitor, and acks a delivery only when the monitor says its result is saved.
Until then the delivery's lease is renewed (by the lease thread of
cluster.leases, which makes every broker call about held deliveries), so a
long task or a slow save is never delivered twice while the cluster lives; if
the cluster dies the renewals stop and the broker hands the delivery out
again after `retry`.

A worker that dies mid-task (killed for its timeout, or crashed) closes its
connection; its running job is recorded as failed or handed back to the
broker, and any job it had not started goes back to the front of the buffer.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe, wait

from ..backoff import Outage
from ..brokers import get_broker
from ..brokers.base import Delivery
from ..conf import Config
from ..exceptions import BrokerError, PackageError
from ..names import worker_id
from ..package import unpack, verify
from ..status import RUNNING, STARTING, STOPPING, Identity, Publisher, Snapshot, Tally
from . import process
from .fetcher import Fetcher
from .leases import Leases
from .messages import STOP, AlreadyDone, Batch, DeadLetterNote, Hello, Job, Outcome, Rejected, Role, Saved, send, send_many
from .runstate import RunState, Seen, path as state_path
from .worker import CANCEL_SIGNAL, cancel_file

logger = logging.getLogger("django_q")

TICK = 0.1  # seconds between housekeeping passes when nothing arrives
# A worker is sent its next jobs before it finishes the current one when tasks
# are short, so that it never waits on a round trip to the pusher: as many as
# run in about PREFETCH_WORK seconds, at most PREFETCH_MAX. Long tasks (and
# every task until run times are known) go one at a time: a job queued behind
# a long one would wait for it, and a graceful stop would have to as well.
PREFETCH_WORK = 0.02  # seconds of work queued in a worker, by the mean run time
PREFETCH_MAX = 64
ORPHAN_CHECK = 0.5  # seconds between checks that the sentinel is still there
ORPHAN_PATIENCE = 10.0  # seconds an orphaned pusher tries to finish before it leaves leases to lapse
MONITOR_WINDOW = 500  # outcomes sent to the monitor and not yet saved, at most
# Outcomes go to the monitor in batches: when MONITOR_BATCH wait, or when the
# oldest has waited MONITOR_LINGER seconds (the monitor lingers longer itself).
MONITOR_BATCH = 64
MONITOR_LINGER = 0.005
BACKLOG = 5000  # unsaved outcomes beyond which no new job starts (the database is down)


@dataclass(eq=False)  # hashed by identity
class Slot:
    """What the pusher knows of one connected worker."""

    conn: Connection
    pid: int
    index: int
    state: RunState | None = None  # what the worker says it runs, read from its state file
    jobs: deque[Delivery] = field(default_factory=deque)  # sent and not answered, in the order the worker runs them
    answered: int = 0  # outcomes (or rejections, or already-done notes) received on this connection
    running: Delivery | None = None  # the job the worker runs now, as last read from its state
    deadline: float | None = None  # monotonic time after which the worker is killed
    started: float | None = None  # epoch seconds the running job started
    killed: bool = False
    # A send to the worker failed: it is leaving (recycled) or dead. It gets no
    # more jobs, but what it sent before it left is still read, up to its EOF.
    closing: bool = False
    cancel_by: float | None = None  # monotonic time after which the cancelled job `cancel_id` is killed
    cancel_id: str | None = None
    # The replacement of a worker about to be recycled, started before it goes
    # (sentinel.Sentinel.spares): it gets no job while a worker of its index is connected.
    standby: bool = False

    def finish(self) -> Delivery | None:
        """The worker answered for its oldest job: forget it (and its clock, if it was the running one)."""
        self.answered += 1
        delivery = self.jobs.popleft() if self.jobs else None
        if delivery is not None and delivery is self.running:
            self.running = self.started = self.deadline = None
        if delivery is not None and delivery.id == self.cancel_id:
            self.cancel_by = self.cancel_id = None
        return delivery


@dataclass
class Unsaved:
    """Deliveries that ran and wait for the monitor to save them."""

    messages: dict[str, Outcome | DeadLetterNote] = field(default_factory=dict)
    unsent: deque[str] = field(default_factory=deque)  # in arrival order
    sent: set[str] = field(default_factory=set)


class Pusher:
    """Dispatches jobs, tracks leases, and acks after saves. Drive it with `loop()`."""

    def __init__(
        self, config: Config, address: str, authkey: bytes, run_once: bool = False, identity: Identity | None = None
    ) -> None:
        self.config = config
        self.run_once = run_once
        self.broker = get_broker(config.name, config)
        self.wake_r, self.wake_w = Pipe(duplex=False)
        self.fetcher = Fetcher(config, config.name, self.wake_w)
        self.slots: dict[Connection, Slot] = {}
        self.monitor: Connection | None = None
        self.unsaved = Unsaved()
        self.unsent_since: float | None = None  # monotonic time the oldest unsent outcome came
        self.cancelling: set[str] = set()  # cancel requests seen, and carried out or waiting for the job to start
        self.address = address
        self.stopping = False
        self.mean_run: float | None = None  # seconds, a moving mean of task run times
        self.outage = Outage(logger, "broker %s failed, will retry: %s", "broker answers again after %.1fs", first=0.2)
        self.listener = process.Listener(address, authkey, lambda: self.wake_w.send_bytes(b"a"))
        identity = identity or Identity.new(config.name)
        self.leases = Leases(config, self._holding, self._running, lambda: self.wake_w.send_bytes(b"c"), identity.id)
        self.leases.start()
        self.fetcher.start()
        self._start_status(identity)

    def stop(self) -> None:
        """Begin a graceful stop: fetch nothing more, hand back what did not start, finish the rest."""
        if not self.stopping:
            self.stopping = True
            self.fetcher.stop()

    @property
    def done(self) -> bool:
        """Stopped and nothing left in hand."""
        return self.stopping and not self.fetcher.is_alive() and self._idle()

    def loop(self, timeout: float = TICK) -> None:
        """One pass: read every ready connection, then dispatch, watch timeouts and renew leases."""
        if self.unsent_since is not None:  # outcomes linger for the monitor
            timeout = min(timeout, max(0.0, self.unsent_since + MONITOR_LINGER - time.monotonic()))
        for conn in wait([self.wake_r, *self.slots, *([self.monitor] if self.monitor else [])], timeout):
            if conn is self.wake_r:
                while self.wake_r.poll():
                    self.wake_r.recv_bytes()
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                self._gone(conn)
                continue
            if conn is self.monitor:
                self._saved(msg)
            else:
                self._from_worker(self.slots[conn], msg)
        while self.listener.newcomers:
            self._welcome(*self.listener.newcomers.popleft())
        if self.leases.cancels:  # read without the lock: take_cancels() takes it
            self._carry_out_cancels()
        if self.stopping and not self.fetcher.is_alive() and self.fetcher.buffer:
            self._hand_back()
        self._dispatch()
        self._watch_timeouts()
        if self.run_once and not self.stopping and self.fetcher.empty_polls and self._idle():
            self.stop()

    def _idle(self) -> bool:
        return (
            not self.fetcher.buffer and not self.unsaved.messages and not self.leases.retrying
            and not any(s.jobs for s in self.slots.values())
        )

    def _welcome(self, conn: Connection, hello: Hello) -> None:
        if hello.role is Role.MONITOR:
            if self.monitor is not None:
                self.monitor.close()
            self.monitor = conn
            self.unsaved.sent.clear()  # a new monitor gets everything not yet saved
            self.unsaved.unsent = deque(self.unsaved.messages)
            self._to_monitor(now=True)
        else:
            try:
                state = RunState(state_path(self.address, hello.pid), writer=False)
            except OSError as exc:  # timeouts and cancels of running jobs cannot be told apart for it
                logger.error("cannot read the state of worker pid %s: %s", hello.pid, exc)
                state = None
            standby = any(s.index == hello.index and not s.standby for s in self.slots.values())
            self.slots[conn] = Slot(conn, hello.pid, hello.index, state, standby=standby)

    def _dispatch(self) -> None:
        buffer = self.fetcher.buffer
        if self.stopping or len(self.unsaved.messages) >= BACKLOG:
            buffer = deque()  # stopping: what is left goes back to the broker; backlog: wait for saves
        taken = 0
        outgoing: dict[Slot, list[Job]] = {}
        slots = [s for s in self.slots.values() if not s.killed and not s.closing and not s.standby]
        depth = self._depth()
        # Short tasks drain a small buffer faster than one broker round trip refills it.
        self.fetcher.prefetch = self.config.workers * depth if depth > 1 else 0
        # A worker is topped up once it is down to half its depth, so that short
        # tasks go out several to a message rather than one per finished job.
        slots = [s for s in slots if len(s.jobs) <= depth // 2]
        for wanted in range(1, depth + 1):  # one job for every worker, then a second, ...
            for slot in [s for s in slots if len(s.jobs) < wanted]:
                delivery = self._next_admissible(buffer)
                if delivery is None:
                    break
                taken += 1
                slot.jobs.append(delivery)
                outgoing.setdefault(slot, []).append(Job(delivery.id, delivery.attempts, delivery.payload))
        if taken:
            self.fetcher.room.set()
        for slot, jobs in outgoing.items():
            try:
                send_many(slot.conn, jobs)
            except OSError:
                # Not _gone() yet: the worker's last outcomes may
                # still be unread, and dropping them would run its task again.
                slot.closing = True
        self._to_monitor()

    def _depth(self) -> int:
        """Jobs a worker may hold: one, or for short tasks as many as run in PREFETCH_WORK."""
        if self.mean_run is None:
            return 1
        return max(1, min(PREFETCH_MAX, int(PREFETCH_WORK / max(self.mean_run, 1e-6))))

    def _next_admissible(self, buffer: deque[Delivery]) -> Delivery | None:
        while buffer:
            delivery = buffer.popleft()
            if self._admissible(delivery):
                return delivery
        return None

    def _admissible(self, delivery: Delivery) -> bool:
        """Check the signature and the attempt limit; route what may not run to the monitor."""
        self.tally.received(delivery.attempts)
        try:
            verify(delivery.payload, self.config.package_limit)
        except PackageError as exc:
            self._dead_letter(delivery, str(exc))
            return False
        limit = self.config.max_attempts
        if limit and delivery.attempts > limit:
            self._fail(delivery, f"delivered {delivery.attempts} times without finishing (max_attempts={limit})")
            return False
        return True

    def _from_worker(self, slot: Slot, msg: object) -> None:
        if type(msg) is Batch:
            for one in msg.messages:
                self._from_worker(slot, one)
            return
        if isinstance(msg, Outcome):
            self.tally.started()
            slot.finish()
            took = msg.stopped - msg.started
            self.mean_run = took if self.mean_run is None else self.mean_run + (took - self.mean_run) / 8
            if msg.retry_payload is not None:
                self._retry_later(msg)
            else:
                self._pend(msg)
        elif isinstance(msg, AlreadyDone):
            slot.finish()
            self.leases.ack_later([msg.delivery_id])
        elif isinstance(msg, Rejected):
            delivery = slot.finish()
            if delivery is not None:
                self._dead_letter(delivery, msg.reason)

    def _gone(self, conn: Connection) -> None:
        """A connection closed: a worker died or recycled, or the monitor went away.

        Everything the worker sent before it went has been read. Of the jobs it
        did not answer for, its state tells those it took (the one it ran when
        it died, and any whose outcome died with it) from those it never took.
        """
        conn.close()
        if conn is self.monitor:
            self.monitor = None
            return
        slot = self.slots.pop(conn)
        if not slot.standby:  # its replacement, if it is here already, takes over
            spare = next((s for s in self.slots.values() if s.index == slot.index and s.standby), None)
            if spare is not None:
                spare.standby = False
        seen = self._observe(slot)
        if slot.state is not None:
            slot.state.remove()
        # Without a state every unanswered job counts as taken: run again rather than lost.
        taken = len(slot.jobs) if seen is None else max(0, min(len(slot.jobs), seen.taken - slot.answered))
        took = [slot.jobs.popleft() for _ in range(taken)]
        # Jobs it never took go to the front of the buffer, in their order.
        self.fetcher.buffer.extendleft(reversed(slot.jobs))
        lost = [d.id for d in took if d is not slot.running]
        if lost:  # they may have run, but no outcome came: they are delivered again
            logger.warning("worker pid %s went with %s unanswered jobs; handing them back", slot.pid, len(lost))
            self._broker_call(self.broker.requeue, lost)
        delivery = slot.running
        if delivery is None:
            return
        if slot.killed and slot.cancel_id == delivery.id:
            self._fail(delivery, f"cancelled; its worker (pid {slot.pid}) was killed after the grace period", slot,
                       cancelled=True)
        elif slot.killed:
            self._fail(delivery, f"task exceeded its timeout and its worker (pid {slot.pid}) was killed", slot)
        elif self.config.max_attempts and delivery.attempts >= self.config.max_attempts:
            self._fail(delivery, f"worker lost after {delivery.attempts} attempts", slot)
        else:
            logger.warning("worker pid %s died running delivery %s; handing it back", slot.pid, delivery.id)
            self._broker_call(self.broker.requeue, [delivery.id])

    def _observe(self, slot: Slot) -> Seen | None:
        """Read which job the worker runs: set its clock, have it marked running, stop it if cancelled.
        Returns what was read (None: no state, or the worker was writing it)."""
        seen = slot.state.read() if slot.state is not None else None
        if seen is None:
            return None
        if seen.running is None:
            slot.running = slot.started = slot.deadline = None
            return seen
        if slot.running is not None and slot.running.id == seen.running and slot.started == seen.started:
            return seen
        delivery = next((d for d in slot.jobs if d.id == seen.running), None)
        if delivery is None:  # answered already: the state was read as the worker moved on
            slot.running = slot.started = slot.deadline = None
            return seen
        slot.running, slot.started = delivery, seen.started
        slot.deadline = seen.started_mono + seen.timeout if seen.timeout else None
        self.leases.started(delivery.id, slot.pid, seen.started, seen.started_mono)
        if delivery.id in self.cancelling:
            self._stop_running(slot)
        return seen

    def _watch_timeouts(self) -> None:
        for slot in self.slots.values():
            if not slot.killed:
                self._observe(slot)
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.killed:
                continue
            running = slot.running.id if slot.running is not None else None
            if slot.cancel_by is not None and now > slot.cancel_by and running == slot.cancel_id:
                logger.warning("worker pid %s did not stop its cancelled task in time; killing it", slot.pid)
            elif slot.deadline is not None and now > slot.deadline:
                slot.cancel_by = slot.cancel_id = None
                logger.error("worker pid %s passed its task's timeout; killing it", slot.pid)
            else:
                continue
            slot.killed = True
            self._signal(slot, signal.SIGKILL)

    # --- cancel() and retry policies ---

    def _carry_out_cancels(self) -> None:
        """Stop what cancel() asked for: drop it from the buffer, or stop the worker running it."""
        wanted = self.leases.take_cancels() - self.cancelling
        if not wanted:
            return
        self.cancelling |= wanted
        buffer = self.fetcher.buffer
        for delivery in [d for d in buffer if d.id in wanted]:
            buffer.remove(delivery)
            self._fail(delivery, "cancelled before it started", cancelled=True)
        for slot in self.slots.values():
            if not any(job.id in wanted for job in slot.jobs):
                continue
            self._observe(slot)
            if slot.running is not None and slot.running.id in wanted:
                self._stop_running(slot)
            else:
                self._tell_worker(slot)  # it skips the job when it comes to it
                self._signal(slot, CANCEL_SIGNAL)  # its first signal makes it read the cancel file

    def _stop_running(self, slot: Slot) -> None:
        """Ask the worker to stop its running job (it raises TaskCancelled); kill it after cancel_grace."""
        if slot.running is None or slot.cancel_id == slot.running.id:
            return  # nothing runs, or its stop is under way
        logger.info("cancelling delivery %s running in worker pid %s", slot.running.id, slot.pid)
        slot.cancel_by = time.monotonic() + self.config.cancel_grace
        slot.cancel_id = slot.running.id
        self._tell_worker(slot)
        self._signal(slot, CANCEL_SIGNAL)

    def _signal(self, slot: Slot, signum: int) -> None:
        try:
            os.kill(slot.pid, signum)
        except ProcessLookupError:
            pass  # gone already: _gone records it

    def _tell_worker(self, slot: Slot) -> None:
        """Write the worker's cancel file: which of its jobs cancel() wants stopped or skipped."""
        ids = [job.id for job in slot.jobs if job.id in self.cancelling]
        try:
            with open(cancel_file(self.address, slot.pid), "w") as f:
                f.write("\n".join(ids))
        except OSError as exc:
            logger.error("could not write the cancel file of worker pid %s: %s", slot.pid, exc)

    def _retry_later(self, outcome: Outcome) -> None:
        """A failed attempt whose retry policy runs it again: the lease thread hands it back to the broker."""
        logger.warning(
            "task %s (%s) failed attempt %s with %s; retrying in %.1fs",
            outcome.task.name, outcome.task.id, outcome.attempts, outcome.exception, outcome.retry_in,
        )
        self.leases.retry_later(outcome.delivery_id, outcome.retry_payload, outcome.retry_in)

    def _fail(self, delivery: Delivery, reason: str, slot: Slot | None = None, cancelled: bool = False) -> None:
        """Record a task that did not finish as a failure or as cancelled (it is acked once saved)."""
        try:
            task = unpack(delivery.payload, self.config.package_limit, verified=True)
        except PackageError as exc:
            self._dead_letter(delivery, str(exc))
            return
        now = time.time()
        started = slot.started if slot and slot.started else now
        outcome = Outcome(
            delivery.id, task, False, reason, started, now, delivery.attempts, task.cluster or self.config.name,
            cancelled=cancelled, worker=worker_id(slot.pid) if slot else None,
        )
        self._pend(outcome)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        logger.error("package %s of queue %s set aside: %s", delivery.id, self.config.name, reason)
        self._pend(DeadLetterNote(delivery.id, self.config.name, delivery.payload, reason))

    def _pend(self, msg: Outcome | DeadLetterNote) -> None:
        self.tally.finished(msg)
        self.unsaved.messages[msg.delivery_id] = msg
        self.unsaved.unsent.append(msg.delivery_id)

    def _to_monitor(self, now: bool = False) -> None:
        """Send the monitor what waits to be saved, in one message, within MONITOR_WINDOW unsaved:
        once MONITOR_BATCH wait or the oldest waited MONITOR_LINGER (at once when `now`)."""
        unsaved = self.unsaved
        if not unsaved.unsent:
            return
        if not (now or self.stopping or len(unsaved.unsent) >= MONITOR_BATCH):
            if self.unsent_since is None:
                self.unsent_since = time.monotonic()
            if time.monotonic() - self.unsent_since < MONITOR_LINGER:
                return
        self.unsent_since = None
        batch: list[Outcome | DeadLetterNote] = []
        while self.monitor is not None and unsaved.unsent and len(unsaved.sent) + len(batch) < MONITOR_WINDOW:
            # The window keeps sends from blocking on a full socket; the rest
            # goes out as Saved answers come back.
            delivery_id = unsaved.unsent.popleft()
            msg = unsaved.messages.get(delivery_id)
            if msg is None or delivery_id in unsaved.sent:
                continue
            batch.append(msg)
        if not batch:
            return
        try:
            send_many(self.monitor, batch)
        except OSError:
            unsaved.unsent.extendleft(reversed([m.delivery_id for m in batch]))
            self._gone(self.monitor)
            return
        unsaved.sent.update(m.delivery_id for m in batch)

    def _saved(self, saved: Saved) -> None:
        for delivery_id in (*saved.ack_ids, *saved.release_ids):
            self.unsaved.messages.pop(delivery_id, None)
            self.unsaved.sent.discard(delivery_id)
            self.cancelling.discard(delivery_id)
        self.leases.ack_later(saved.ack_ids)

    def _hand_back(self) -> None:
        """On a graceful stop, return fetched-but-unstarted deliveries to the queue at once."""
        ids = [d.id for d in self.fetcher.buffer]
        if self._broker_call(self.broker.requeue, ids):
            self.fetcher.buffer.clear()

    def _holding(self) -> list[str]:
        """The deliveries this loop holds. Called from the lease thread: list() copies in one step."""
        sent = [job.id for slot in list(self.slots.values()) for job in list(slot.jobs)]
        return [*(d.id for d in list(self.fetcher.buffer)), *sent, *list(self.unsaved.messages)]

    def _running(self) -> set[str]:
        """The deliveries running now. Called from the lease thread."""
        return {d.id for d in [slot.running for slot in list(self.slots.values())] if d is not None}

    def _broker_call(self, method: Callable[[list[str]], None], ids: list[str]) -> bool:
        """Call a broker method; on failure log once per outage and report False (the caller retries).

        During an outage calls are spaced out with a growing pause, so that the
        loop keeps serving workers instead of waiting on connect timeouts.
        """
        if not self.outage.due():
            return False
        try:
            method(ids)
        except BrokerError as exc:
            self.outage.failed(method.__name__, exc)
            return False
        self.outage.recovered()
        return True

    def close(self) -> None:
        """Ack what is saved, tell workers and the monitor to exit, and release the socket."""
        self.status.stop()
        self.leases.close(self.broker)  # and what the lease thread had no time for
        for conn in [*self.slots, *([self.monitor] if self.monitor else [])]:
            try:
                send(conn, STOP)
            except OSError:
                pass
        self.listener.close()
        try:
            os.unlink(self.address)
        except OSError:
            pass
        self.broker.close()


    # --- cluster status (django_q.status) ---

    def _start_status(self, identity: Identity) -> None:
        """Count what happens and publish the status from a thread with its own broker."""
        self.tally = Tally()
        self.all_connected = False
        self.status = Publisher(self.config, identity, self._status_snapshot, self.tally)
        self.status.start()

    def _status_snapshot(self) -> Snapshot:
        """State and workers for the status. Called from the status thread: list() copies in one step."""
        slots = [s for s in list(self.slots.values()) if not s.standby]
        self.all_connected = self.all_connected or len(slots) >= self.config.workers
        state = STOPPING if self.stopping else RUNNING if self.all_connected else STARTING
        return state, [(s.index, s.pid, s.running, s.started) for s in slots]


def main(
    address: str, authkey: bytes, config: Config, run_once: bool = False, identity: Identity | None = None
) -> None:
    """Process entry point: run until SIGTERM (graceful) or until the sentinel disappears."""
    process.setup("pusher", config.name)
    pusher = Pusher(config, address, authkey, run_once, identity)
    signal.signal(signal.SIGTERM, lambda *_: pusher.stop())
    orphaned_at = None
    next_orphan_check = 0.0
    try:
        while not pusher.done:
            pusher.loop()
            if orphaned_at is None and time.monotonic() >= next_orphan_check:
                next_orphan_check = time.monotonic() + ORPHAN_CHECK
                if process.orphaned():
                    # The workers and the monitor outlive the sentinel for a moment:
                    # stop as gracefully as they allow, then let any lease lapse.
                    logger.error("pusher: the sentinel is gone; stopping")
                    orphaned_at = time.monotonic()
                    pusher.stop()
            if orphaned_at is not None and time.monotonic() - orphaned_at > ORPHAN_PATIENCE:
                return
    finally:
        pusher.close()
