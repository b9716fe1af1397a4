"""Save, then ack: a result's way from a worker's outcome to the ack, inside the pusher's process.

The pusher keeps each finished job's outcome (or a dead letter note) in
`Unsaved` and hands it, as the object the worker's message became, to the
`Saver`, a thread of the same process. The saver records outcomes in batches
(django_q.recorder: rows, pruning, hooks, chains) and answers each batch with
`Saved` once its rows are committed; only then does the pusher ack the
deliveries (through the lease thread, which renews them until then). A batch
that meets a database outage is kept and saved again, with a growing pause,
until it goes through: the acks wait, nothing is lost. After answering, the
saver adds the batch to the queue's per-minute history (django_q.history),
written to the broker at most every history.FLUSH seconds.

A cluster whose heartbeat lapsed (paused, or cut off) may have had deliveries
released to other clusters (Leases.lost): nothing is handed to the saver until
the lease thread confirmed lately that every held lease is still this
cluster's, and the results of deliveries that went elsewhere are dropped
(`Saving.disown`), never saved or acked here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from django import db
from django.db import DatabaseError

from .. import deadletters, reporters
from ..backoff import Outage
from ..brokers import close_brokers, get_broker
from ..brokers.base import Delivery
from ..brokers.queues import queue_of
from ..conf import Config
from ..counters import Tally
from ..enqueue import continue_chain
from ..exceptions import BrokerError, PackageError, WorkerLost
from ..history import HistoryWriter
from ..names import new_id, worker_id
from ..package import unpack
from ..recorder import Recorder
from ..runner import class_path
from .fetcher import Fetcher
from .leases import Leases
from .messages import DeadLetterNote, Outcome, Saved
from .slots import Slot
from .unsaved import WINDOW, Unsaved
from .watch import Watch

logger = logging.getLogger("django_q")

_LOST = class_path(WorkerLost)  # the exception named for a failure the task did not raise

BATCH = WINDOW  # most messages saved in one transaction: all the pusher hands over unsaved
# Seconds a batch waits for more results once the first arrived: fewer commits,
# and under load whole batches of successes beyond save_limit never written
# (Recorder._unpruned). It doubles after a big batch and halves after a small one.
LINGER_MIN = 0.01
LINGER_MAX = 0.1
BIG_BATCH = 50
JOIN_PATIENCE = 5.0  # seconds close() waits for the saver's batch under way


class Saver:
    """Records what the pusher hands over, in batches, and calls `answer(saved)` once a batch is committed.

    `Saver(...)` starts nothing and touches no database: `loop()` makes one
    pass (a test calls it), `start()` runs passes in a thread until `stop()`.
    `hand()` is the one method the pusher's loop calls; `answer` is called
    from the saver's thread.
    """

    def __init__(self, config: Config, answer: Callable[[Saved], None]) -> None:
        self.config = config
        self.answer = answer
        self.inbox: deque[Outcome | DeadLetterNote] = deque()
        self.ready = threading.Condition()
        self.waiting = False  # the thread waits for a first message: hand() wakes it
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.recorder = Recorder(config, chain=lambda task: continue_chain(task, config))
        self.outage = Outage(logger, "saving %s results failed, will retry: %s", "results saved again after %.1fs")
        self.linger = LINGER_MIN
        self.early_at = BIG_BATCH if config.save_limit <= 0 else BATCH
        # A writer replaces its own records whole: a saver made anew in this process (a pusher
        # replaced within one process, as in tests) must not take the records of the one before.
        self.writer = f"{new_id()[:8]}:{worker_id()}"[:64]
        self.histories: dict[str, HistoryWriter] = {}  # made on the first batch, in the saver's thread
        self.history_outage = Outage(logger, "queue history not written: %s", level=logging.WARNING)

    def hand(self, messages: list[Outcome | DeadLetterNote]) -> None:
        """Take `messages` to save (called by the pusher's loop); the thread wakes when it should."""
        with self.ready:
            self.inbox.extend(messages)
            if self.waiting or len(self.inbox) >= self.early_at:
                self.ready.notify()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="django_q-saver", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Save what was handed over, write the history, and end; a save stuck in an outage is given up."""
        self.stopped.set()
        with self.ready:
            self.ready.notify()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def run(self) -> None:
        try:
            while self.loop():
                pass
        finally:
            close_brokers()  # this thread's
            db.connections.close_all()

    def loop(self, timeout: float = 1.0) -> bool:
        """Take what is handed over (waiting up to `timeout` seconds), save it, answer; False once stopped."""
        outcomes, dead = self._take(timeout)
        stop = self.stopped.is_set() and not self.inbox
        if outcomes or dead:
            big = len(outcomes) + len(dead) >= BIG_BATCH
            self.linger = min(LINGER_MAX, self.linger * 2) if big else max(LINGER_MIN, self.linger / 2)
            saved = self.save(outcomes, dead)
            if saved is None:
                return False
            self.answer(saved)
            self._add_history(outcomes)  # after the answer: the acks do not wait for it
        elif self.recorder.prune_pending:
            self._idle_prune()
        self.write_history(force=stop)
        return not stop

    def _take(self, timeout: float) -> tuple[list[Outcome], list[DeadLetterNote]]:
        """The next batch: wait for a first message, then linger for more unless the batch is big already.

        Without a save_limit to prune to, a batch of early_at is saved at once:
        every row is written anyway, and lingering would only hold up the
        acks. With one, lingering fills the batch, and successes beyond
        save_limit in it are never written (Recorder._unpruned).
        """
        with self.ready:
            if not self.inbox and not self.stopped.is_set():
                self.waiting = True
                self.ready.wait(timeout)
                self.waiting = False
            if not self.inbox:
                return [], []
            linger_until = time.monotonic() + self.linger
            while len(self.inbox) < self.early_at and not self.stopped.is_set():
                left = linger_until - time.monotonic()
                if left <= 0:
                    break
                self.ready.wait(left)
            taken = [self.inbox.popleft() for _ in range(min(BATCH, len(self.inbox)))]
        outcomes: list[Outcome] = []
        dead: list[DeadLetterNote] = []
        for msg in taken:
            if isinstance(msg, DeadLetterNote):
                dead.append(msg)
            else:
                outcomes.append(msg)
        return outcomes, dead

    def save(self, outcomes: list[Outcome], dead: list[DeadLetterNote]) -> Saved | None:
        """Record a batch, waiting out database outages with a growing pause; None if stopped meanwhile."""
        while True:
            try:
                saved = self.recorder.record(outcomes, dead)
            except DatabaseError as exc:
                pause = self.outage.failed(len(outcomes), exc)
            except Exception:  # the thread's boundary: keep the batch and try again, as after an outage
                pause = self.outage.failed(message="saving results failed, will retry", exc_info=True)
            else:
                self.outage.recovered()
                return saved
            db.connections.close_all()
            if self.stopped.wait(pause):
                return None  # the pusher is going: the leases of the batch lapse and it runs again

    def _histories(self) -> dict[str, HistoryWriter]:
        # One history per queue the cluster serves: an outcome counts in its delivery's queue.
        if not self.histories:
            self.histories = {q: HistoryWriter(get_broker(q, self.config), self.writer)
                              for q in self.config.served_queues}
        return self.histories

    def _add_history(self, outcomes: list[Outcome]) -> None:
        histories = self._histories()
        if len(histories) == 1:  # a single-queue cluster's delivery ids name no queue
            next(iter(histories.values())).add(outcomes)
            return
        by_queue: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_queue.setdefault(queue_of(o.delivery_id, ""), []).append(o)
        for queue, some in by_queue.items():
            if queue in histories:
                histories[queue].add(some)

    def write_history(self, force: bool = False) -> None:
        """Write the history if it is due; a broker outage only puts it off (the minutes are kept)."""
        try:
            wrote = [history.flush(force) for history in self.histories.values()]
        except BrokerError as exc:
            self.history_outage.failed(exc)
            return
        if any(wrote):
            self.history_outage.recovered()

    def _idle_prune(self) -> None:
        """Finish a prune put off while results were coming; an outage just puts it off again."""
        try:
            self.recorder.prune_if_due(force=True)
        except DatabaseError as exc:
            logger.warning("pruning results failed, will retry: %s", exc)
            db.connections.close_all()


class Saving:
    """The pusher's side: what ran and waits to be saved, handed to the saver, acked once saved.

    Everything here but `answer` runs in the pusher's loop; `answer` (the
    saver's thread) only appends to `answers` and wakes the loop.
    """

    def __init__(
        self,
        config: Config,
        leases: Leases,
        fetcher: Fetcher,
        watch: Watch,
        tally: Tally,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.leases = leases
        self.fetcher = fetcher
        self.watch = watch
        self.tally = tally
        self.wake = wake
        self.clock = clock
        self.unsaved = Unsaved()
        self.answers: deque[Saved] = deque()  # from the saver's thread, in the order saved
        self.saver = Saver(config, self.answer)
        # Deliveries released to other clusters while this one was silent (Leases.lost): their
        # results here are dropped and they are never acked here.
        self.disowned: set[str] = set()

    def answer(self, saved: Saved) -> None:
        self.answers.append(saved)
        self.wake()

    def pend(self, msg: Outcome | DeadLetterNote) -> None:
        """Keep a result until it is saved; dropped if its delivery went to another cluster."""
        if msg.delivery_id in self.disowned:
            self.disowned.discard(msg.delivery_id)
            logger.warning("delivery %s finished here after it went to another cluster; its result is dropped",
                           msg.delivery_id)
            return
        self.tally.finished(msg)
        self.unsaved.add(msg)

    def fail(self, delivery: Delivery, reason: str, slot: Slot | None = None, cancelled: bool = False) -> None:
        """Record a task that did not finish as a failure or as cancelled (it is acked once saved)."""
        try:
            task = unpack(delivery.payload, self.config.package_limit, verified=True)
        except PackageError as exc:
            self.dead_letter(delivery, str(exc))
            return
        now = time.time()
        started = slot.started if slot and slot.started else now
        outcome = Outcome(
            delivery.id, task, False, reason, started, now, delivery.attempts, task.cluster or self.config.name,
            cancelled=cancelled, worker=worker_id(slot.pid) if slot else None,
            exception=None if cancelled else _LOST,
        )
        self.pend(outcome)
        if not cancelled:
            reporters.report(self.config, WorkerLost(f"task {task.name} ({task.id}, {task.func_name}): {reason}"))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Set a package aside as a dead letter (saved, then acked)."""
        queue = queue_of(delivery.id, self.config.name)
        logger.error("package %s of queue %s set aside: %s", delivery.id, queue, reason)
        # A package over package_limit is kept as its header only.
        self.pend(deadletters.note(delivery.id, queue, delivery.payload, reason, self.config.package_limit))

    def may_save(self, stopping: bool) -> bool:
        """Whether results may go to be saved: the lease thread confirmed lately that every held lease is
        still this cluster's (Leases.in_touch). A stop saves what it has either way."""
        return stopping or self.leases.in_touch(self.clock())

    def hand_over(self, stopping: bool) -> None:
        """Hand the saver what waits to be saved (at most WINDOW unsaved at a time; see cluster.unsaved)."""
        if not self.may_save(stopping):
            return
        # The beat that put this cluster in touch marked what it lost first; it may have come after
        # the loop looked, so look again now that `touched` is read.
        if self.leases.lost:
            self.disown(self.leases.take_lost())
        self.unsaved.send(self.saver.hand)

    def settle(self) -> None:
        """Ack what the saver answered for since the last call (through the lease thread)."""
        while self.answers:
            saved = self.answers.popleft()
            self.watch.cancelling.difference_update(self.unsaved.settle(saved))
            disowned = self.disowned.intersection(saved.ack_ids)
            self.disowned -= disowned
            self.leases.ack_later([i for i in saved.ack_ids if i not in disowned])

    def disown(self, lost: set[str]) -> None:
        """Deliveries released to other clusters while this one was silent: forget those not started, and drop
        the results of the others (those already handed to the saver are saved once: Recorder keeps the first)."""
        buffer = self.fetcher.buffer
        unstarted = [d for d in list(buffer) if d.id in lost]  # list(): the fetcher appends meanwhile
        for delivery in unstarted:
            buffer.remove(delivery)
        unsent = [i for i in lost if i in self.unsaved.messages and i not in self.unsaved.sent]
        self.unsaved.settle(Saved(ack_ids=(), release_ids=tuple(unsent)))
        # Still to come: the outcomes of jobs sent to workers, and the answers of results handed to the saver.
        self.disowned |= lost - {d.id for d in unstarted} - set(unsent)

    def close(self) -> None:
        """Stop the saver once its batch under way is answered, and ack what it saved."""
        self.saver.stop()
        self.saver.join(JOIN_PATIENCE)
        self.settle()
