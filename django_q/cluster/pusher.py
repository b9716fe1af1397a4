"""The pusher: owns every lease the cluster holds, from dequeue to ack.

Workers connect to the pusher's local socket. The pusher hands each idle
worker one verified job, hands finished outcomes to the saver thread of its
own process (cluster.saving), and acks a delivery only when the saver says
its result is saved. Until then the delivery's lease is renewed (by the lease
thread of cluster.leases, which makes every broker call about held
deliveries), so a long task or a slow save is never delivered twice while the
cluster lives; if the cluster dies the renewals stop and the broker hands the
delivery out again after `retry`. The process also runs the cluster's
scheduler, in a thread (cluster.scheduler).

A worker that dies mid-task (killed for its timeout, or crashed) closes its
connection; its running job is recorded as failed or handed back to the
broker, and any job it had not started goes back to the front of the buffer.

`Pusher(...)` starts nothing; `start()` binds the socket and starts the
fetcher and saver threads (the lease and status threads follow the first
dequeue's answer, the scheduler's the first outcome), and `loop()` waits for connections and calls `step(ready)`, which
makes every decision (all but one: while the loop waits, the fetcher thread
deals out what it fetched itself, under the same lock, see `_deal_now`). A
test calls `step()` with connections of its own, a clock of its own and a `kill` that records signals.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING

from ..backoff import Outage
from ..brokers import cluster_broker
from ..brokers.base import Delivery, QueueBackend
from ..conf import Config
from ..counters import Tally
from ..exceptions import BrokerError, PackageError
from ..names import Identity
from ..package import verify
from . import process
from .channels import GRACEFUL_STOP, Wake, folder_of, state_path
from .fetcher import Fetcher
from .leases import Leases
from .messages import (
    STOP, AlreadyDone, Batch, Hello, Job, Late, Outcome, Rejected, send, send_many,
)
from .runstate import RunState
from .saving import Saving
from .scheduler import SchedulerThread
from .slots import Slot, deal, depth
from .watch import Watch

if TYPE_CHECKING:
    from ..status import Publisher, Snapshot

logger = logging.getLogger("django_q")

TICK = 0.1  # seconds between housekeeping passes when nothing arrives
ORPHAN_CHECK = 0.5  # seconds between checks that the sentinel is still there
ORPHAN_PATIENCE = 10.0  # seconds an orphaned pusher tries to finish before it leaves leases to lapse
BACKLOG = 5000  # unsaved outcomes beyond which no new job starts (the database is down)
# Seconds after start() the scheduler's thread starts if no outcome came back before: its first
# pass (queries, imports) must not compete with the first fetch, dispatch and task at start.
SCHEDULER_DELAY = 1.0
# Seconds after start() the lease and status threads start if the fetcher's first dequeue has not
# answered by then. Each opens a connection of its own and makes a broker call at once (a beat, a
# publication), which slowed that first dequeue by a few milliseconds when they raced it for the GIL.
KEEPERS_DELAY = 0.1
SCHEDULER_PATIENCE = 5.0  # seconds close() waits for the scheduler's pass under way


class Pusher:
    """Dispatches jobs, tracks leases, and acks after saves. `start()`, then `loop()` until `done`; `close()`.

    `broker` is the loop's own (requeues); `clock` gives the monotonic seconds
    of deadlines and grace periods (the workers' state files count in
    time.monotonic); `kill(pid, signum)` signals a worker.
    """

    def __init__(
        self,
        config: Config,
        address: str,
        authkey: bytes = b"",
        run_once: bool = False,
        identity: Identity | None = None,
        *,
        broker: QueueBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self.config = config
        self.address = address
        self.folder = folder_of(address)
        self.authkey = authkey
        self.run_once = run_once
        self.identity = identity or Identity.new(config.name)
        self.broker = broker or cluster_broker(config)
        self.clock = clock
        self.wake_r: Connection | None = None
        self.wake_w: Connection | None = None
        self.listener: process.Listener | None = None
        self.poller = process.Poller()
        self.status: Publisher | None = None
        self.newcomers: deque[tuple[Connection, Hello]] = deque()  # connected and introduced, not yet welcomed
        # Held while the loop's decisions are made: by loop()'s step(), or by the fetcher thread
        # dealing out what it just fetched (_deal_now, from start() on) while the loop waits.
        self.lock = threading.Lock()
        self.fetcher = Fetcher(config, self._wake, self._free_workers, owner=self.identity.id)
        self.slots: dict[Connection, Slot] = {}
        self.stopping = False
        self.mean_run: float | None = None  # seconds, a moving mean of task run times
        self.outage = Outage(logger, "broker %s failed, will retry: %s", "broker answers again after %.1fs",
                             first=0.2, clock=clock)
        self.leases = Leases(config, self._holding, self._running, lambda: self._wake(Wake.CANCELS),
                             self.identity.id, clock)
        self.watch = Watch(config, self.folder, self.leases, clock, kill)
        self.tally = Tally(self.config.metrics_functions)
        self.saving = Saving(config, self.leases, self.fetcher, self.watch, self.tally,
                             lambda: self._wake(Wake.SAVED), clock)
        self.scheduler = SchedulerThread(config)
        self.started_at: float | None = None  # clock time of start(); None: never started (a test steps it)

    def start(self) -> None:
        """Wire the process: the wake pipe, the socket, and the fetcher and saver threads (the lease and
        status threads follow, see _start_late_threads)."""
        self.wake_r, self.wake_w = Pipe(duplex=False)
        # The socket first: a pusher that cannot bind it must have leased nothing.
        # Then the fetcher, before the other threads: its connection and first
        # lease are the longest step before the first job.
        self.listener = process.Listener(self.address, self.authkey, self._arrived)
        self.fetcher.deal = self._deal_now
        self.fetcher.start()
        self.saving.saver.start()  # it touches the database only once it is handed a result
        self.started_at = self.clock()  # the lease and status threads start in step(): _start_late_threads

    def _wake(self, reason: Wake) -> None:
        """Called from the other threads: end the loop's wait."""
        if self.wake_w is not None:
            self.wake_w.send_bytes(reason.value)

    def _arrived(self, conn: Connection, hello: Hello) -> None:
        self.newcomers.append((conn, hello))
        self._wake(Wake.ARRIVED)

    def stop(self) -> None:
        """Begin a graceful stop: fetch nothing more, hand back what did not start, finish the rest."""
        if not self.stopping:
            self.stopping = True
            self.fetcher.stop()
            self.scheduler.stop()  # after its pass under way (an interrupted pass would be safe too)

    @property
    def done(self) -> bool:
        """Stopped and nothing left in hand."""
        return self.stopping and not self.fetcher.is_alive() and self._idle()

    def loop(self, timeout: float = TICK) -> None:
        """One pass of the process: wait up to `timeout` seconds for connections to read, then `step()`."""
        ready = self.wait(timeout)
        with self.lock:
            self.step(ready)

    def _deal_now(self) -> bool:
        """Called from the fetcher thread as deliveries arrive: deal them out unless the loop is making a
        pass (then False: the fetcher wakes it). A worker that waits for its next task gets it without
        the loop's thread waking in between. Only jobs are sent here: connections are closed, and
        results sent to be saved, by the loop alone."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            self._deal_out()
        finally:
            self.lock.release()
        return True

    def wait(self, timeout: float) -> list[Connection]:
        """The connections ready to read (or closed), waiting up to `timeout` seconds."""
        assert self.wake_r is not None, "start() first"
        ready = self.poller.wait([self.wake_r, *self.slots], timeout)
        if self.wake_r in ready:
            while self.wake_r.poll():
                self.wake_r.recv_bytes()
        return [conn for conn in ready if conn is not self.wake_r]

    def step(self, ready: Iterable[Connection] = ()) -> None:
        """Read each ready connection and welcome newcomers; then carry out cancels, hand back the buffer
        if stopping, dispatch, and watch timeouts."""
        for conn in ready:
            self._read(conn)
        if self.saving.answers:
            self.saving.settle()
        while self.newcomers:
            self._welcome(*self.newcomers.popleft())
        if self.leases.lost:  # read without the lock: take_lost() takes it
            self.saving.disown(self.leases.take_lost())
        if self.leases.cancels:  # read without the lock: take_cancels() takes it
            self._carry_out_cancels()
        if self.stopping and not self.fetcher.is_alive() and self.fetcher.buffer:
            self._hand_back()
        self._dispatch()
        self.watch.timeouts(self.slots.values())
        if self.started_at is not None:
            self._start_late_threads()
        if self.run_once and not self.stopping and self.fetcher.empty_polls and self._idle():
            self.stop()

    def _read(self, conn: Connection) -> None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            self._gone(conn)
            return
        self._from_worker(self.slots[conn], msg)

    def _start_late_threads(self) -> None:
        """Start what must not race the first tasks at start. The lease and status threads (each opens a
        connection and makes a broker call at once) once the fetcher's first dequeue answered, or
        KEEPERS_DELAY after start(), stopping or not: until then nothing needs them, as leases taken within
        DEAD_AFTER are never released for want of a beat and acks wait in `leases`. The scheduler (queries,
        imports) once the first outcome came back, or SCHEDULER_DELAY after start(), unless stopping."""
        assert self.started_at is not None
        since = self.clock() - self.started_at
        if self.status is None and (self.fetcher.first_round.is_set() or since >= KEEPERS_DELAY):
            # Imported here, off the way to the first task: the status's records take milliseconds to make.
            from ..status import Publisher

            self.leases.start()
            # The status thread has its own broker; it reads the loop's state through _status_snapshot.
            self.status = Publisher(self.config, self.identity, self._status_snapshot, self.tally)
            self.status.start()
        scheduler_due = self.tally.started_count or since >= SCHEDULER_DELAY
        if self.scheduler.ident is None and not self.stopping and scheduler_due:
            self.scheduler.start()

    def _idle(self) -> bool:
        return (
            not self.fetcher.buffer and not self.saving.unsaved.messages and not self.leases.retrying
            and not any(s.jobs for s in self.slots.values())
        )

    def _welcome(self, conn: Connection, hello: Hello) -> None:
        try:
            state = RunState(state_path(self.folder, hello.pid), writer=False)
        except OSError as exc:  # timeouts and cancels of running jobs cannot be told apart for it
            logger.error("cannot read the state of worker pid %s: %s", hello.pid, exc)
            state = None
        standby = any(s.index == hello.index and not s.standby for s in self.slots.values())
        self.slots[conn] = Slot(conn, hello.pid, hello.index, state, standby=standby)

    def _dispatch(self) -> None:
        self._deal_out()
        self.saving.hand_over(self.stopping)

    def _deal_out(self) -> None:
        """Deal the buffer out to the workers with room for more jobs."""
        most = depth(self.mean_run)
        # Short tasks drain a small buffer faster than one broker round trip refills it.
        self.fetcher.prefetch = self.config.workers * most if most > 1 else 0
        # Stopping: what is left goes back to the broker. Backlog: wait for saves.
        if not self.stopping and len(self.saving.unsaved) < BACKLOG:
            outgoing = deal(list(self.slots.values()), most, self._next_admissible)
            if outgoing:
                self.fetcher.room.set()
            for slot, jobs in outgoing.items():
                try:
                    send_many(slot.conn, [Job(d.id, d.attempts, d.payload, d.start_by) for d in jobs])
                except OSError:
                    # Not _gone() yet: the worker's last outcomes may
                    # still be unread, and dropping them would run its task again.
                    slot.closing = True

    def _next_admissible(self) -> Delivery | None:
        buffer = self.fetcher.buffer
        while buffer:
            delivery = buffer.popleft()
            self.saving.disowned.discard(delivery.id)  # delivered to this cluster again: its own once more
            if self._admissible(delivery):
                return delivery
        return None

    def _admissible(self, delivery: Delivery) -> bool:
        """Check the signature and the attempt limit; route what may not run to be saved as such."""
        self.tally.received(delivery.attempts)
        try:
            verify(delivery.payload, self.config.package_limit)
        except PackageError as exc:
            self.saving.dead_letter(delivery, str(exc))
            return False
        limit = self.config.max_attempts
        if limit and delivery.attempts > limit:
            self.saving.fail(delivery, f"delivered {delivery.attempts} times without finishing (max_attempts={limit})")
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
                self.saving.pend(msg)
        elif isinstance(msg, AlreadyDone):
            slot.finish()
            self.leases.ack_later([msg.delivery_id])
        elif isinstance(msg, Late):
            slot.finish()
            self.leases.defer_later(msg.delivery_id)
        elif isinstance(msg, Rejected):
            delivery = slot.finish()
            if delivery is not None:
                self.saving.dead_letter(delivery, msg.reason)

    def _gone(self, conn: Connection) -> None:
        """A connection closed: a worker died or recycled.

        Everything the worker sent before it went has been read. Of the jobs it
        did not answer for, its state tells those it took (the one it ran when
        it died, and any whose outcome died with it) from those it never took.
        """
        conn.close()
        slot = self.slots.pop(conn)
        if not slot.standby:  # its replacement, if it is here already, takes over
            spare = next((s for s in self.slots.values() if s.index == slot.index and s.standby), None)
            if spare is not None:
                spare.standby = False
        seen = self.watch.observe(slot)
        if slot.state is not None:
            slot.state.remove()
        took = slot.taken(seen)
        # Jobs it never took go to the front of the buffer, in their order.
        self.fetcher.buffer.extendleft(reversed(list(slot.jobs)[len(took):]))
        lost = [d.id for d in took if d is not slot.running and d.id not in self.saving.disowned]
        if lost:  # they may have run, but no outcome came: they are delivered again
            logger.warning("worker pid %s went with %s unanswered jobs; handing them back", slot.pid, len(lost))
            self._broker_call(self.broker.requeue, lost)
        if slot.running is not None:
            self._lost_running(slot, slot.running)

    def _lost_running(self, slot: Slot, delivery: Delivery) -> None:
        """The worker went while it ran `delivery`: record why, or hand it back to run again."""
        if delivery.id in self.saving.disowned:  # another cluster holds it now: nothing to record or hand back
            self.saving.disowned.discard(delivery.id)
            return
        if slot.killed and slot.cancel_id == delivery.id:
            self.saving.fail(delivery, f"cancelled; its worker (pid {slot.pid}) was killed after the grace period", slot,
                       cancelled=True)
        elif slot.killed:
            self.saving.fail(delivery, f"task exceeded its timeout and its worker (pid {slot.pid}) was killed", slot)
        elif self.config.max_attempts and delivery.attempts >= self.config.max_attempts:
            self.saving.fail(delivery, f"worker lost after {delivery.attempts} attempts", slot)
        else:
            logger.warning("worker pid %s died running delivery %s; handing it back", slot.pid, delivery.id)
            self._broker_call(self.broker.requeue, [delivery.id])

    def _carry_out_cancels(self) -> None:
        """Stop what cancel() asked for: drop it from the buffer, or stop the worker that holds it."""
        wanted = self.leases.take_cancels() - self.watch.cancelling
        if not wanted:
            return
        self.watch.cancelling |= wanted
        buffer = self.fetcher.buffer
        for delivery in [d for d in buffer if d.id in wanted]:
            buffer.remove(delivery)
            self.saving.fail(delivery, "cancelled before it started", cancelled=True)
        self.watch.cancel(wanted, self.slots.values())

    def _retry_later(self, outcome: Outcome) -> None:
        """A failed attempt whose retry policy runs it again: the lease thread hands it back to the broker."""
        logger.warning(
            "task %s (%s) failed attempt %s with %s; retrying in %.1fs",
            outcome.task.name, outcome.task.id, outcome.attempts, outcome.exception, outcome.retry_in,
        )
        assert outcome.retry_payload is not None  # only outcomes with a retry come here
        self.leases.retry_later(outcome.delivery_id, outcome.retry_payload, outcome.retry_in)

    def _hand_back(self) -> None:
        """On a graceful stop, return fetched-but-unstarted deliveries to the queue at once."""
        ids = [d.id for d in self.fetcher.buffer]
        if self._broker_call(self.broker.requeue, ids):
            self.fetcher.buffer.clear()

    def _holding(self) -> list[str]:
        """The deliveries this loop holds. Called from the lease thread: list() copies in one step."""
        disowned = self.saving.disowned  # another cluster holds these now: not renewed here
        sent = [job.id for slot in list(self.slots.values()) for job in list(slot.jobs) if job.id not in disowned]
        return [*(d.id for d in list(self.fetcher.buffer)), *sent, *list(self.saving.unsaved.messages)]

    def _free_workers(self) -> int:
        """Workers the next deal sends a job to. Called from the fetcher thread: list() copies in one step."""
        most = depth(self.mean_run)
        return sum(1 for slot in list(self.slots.values()) if slot.open and len(slot.jobs) <= most // 2)

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
        """Ack what is saved, tell workers to exit, release the socket, and end the saver and scheduler."""
        self.fetcher.deal = None  # a fetcher still running (the loop failed) deals nothing after the STOPs
        if self.status is not None:
            self.status.stop()
        self.scheduler.stop()
        self.saving.close()  # its last answers are acked below
        self.leases.close(self.broker)  # and what the lease thread had no time for
        for conn in self.slots:
            try:
                send(conn, STOP)
            except OSError:
                pass
        if self.listener is not None:
            self.listener.close()
            try:
                os.unlink(self.address)
            except OSError:
                pass
        self.broker.close()
        if self.scheduler.is_alive():
            self.scheduler.join(SCHEDULER_PATIENCE)  # its pass under way finishes

    def _status_snapshot(self) -> Snapshot:
        """Stopping or not, and the workers, for the status. Called from the status thread: list() copies in
        one step."""
        slots = [s for s in list(self.slots.values()) if not s.standby]
        return self.stopping, [(s.index, s.pid, s.running, s.started, s.progress, s.answered) for s in slots]


def main(
    address: str, authkey: bytes, config: Config, run_once: bool = False, identity: Identity | None = None
) -> None:
    """Process entry point: run until SIGTERM (graceful) or until the sentinel disappears."""
    process.setup("pusher", config.name, config.log_level)
    pusher = Pusher(config, address, authkey, run_once, identity)
    pusher.start()
    signal.signal(GRACEFUL_STOP, lambda *_: pusher.stop())
    orphaned_at = None
    next_orphan_check = 0.0
    try:
        while not pusher.done:
            pusher.loop()
            if orphaned_at is None and time.monotonic() >= next_orphan_check:
                next_orphan_check = time.monotonic() + ORPHAN_CHECK
                if process.orphaned():
                    # The workers outlive the sentinel for a moment:
                    # stop as gracefully as they allow, then let any lease lapse.
                    logger.error("pusher: the sentinel is gone; stopping")
                    orphaned_at = time.monotonic()
                    pusher.stop()
            if orphaned_at is not None and time.monotonic() - orphaned_at > ORPHAN_PATIENCE:
                return
    finally:
        pusher.close()
