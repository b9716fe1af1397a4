"""The monitor: saves results in batches (django_q.recorder), keeps the queue's history, runs the scheduler.

It gets outcomes from the pusher and answers each batch with `Saved`, after
the rows are committed; only then does the pusher ack the broker. A batch that
meets a database outage is kept and saved again until it goes through. The
outcomes it saved are added to the queue's per-minute history
(django_q.history), written to the broker at most every history.FLUSH seconds:
off the workers' and the pusher's path.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from django import db
from django.db import DatabaseError

from ..backoff import Outage
from ..brokers import get_broker
from ..brokers.queues import queue_of
from ..conf import Config
from ..enqueue import continue_chain
from ..exceptions import BrokerError
from ..history import HistoryWriter
from ..names import new_id, worker_id
from ..recorder import Recorder
from . import process
from .channels import GRACEFUL_STOP
from .messages import STOP, DeadLetterNote, Exit, Hello, Outcome, Role, Saved, send, unbatch
from .scheduler import SchedulerThread

logger = logging.getLogger("django_q")

BATCH = 500  # most messages saved in one transaction
# Seconds a batch waits for more results once the first arrived: fewer commits,
# and under load whole batches of successes beyond save_limit never written
# (Recorder._unpruned). It doubles after a big batch and halves after a small one.
LINGER_MIN = 0.01
LINGER_MAX = 0.1
BIG_BATCH = 50


class Monitor:
    """The monitor process's loop around a Recorder."""

    def __init__(self, conn: Any, config: Config) -> None:
        self.conn = conn
        self.recorder = Recorder(config, chain=lambda task: continue_chain(task, config))
        self.outage = Outage(logger, "saving %s results failed, will retry: %s", "results saved again after %.1fs")
        self.linger = LINGER_MIN
        self.early_at = BIG_BATCH if config.save_limit <= 0 else BATCH
        # A writer replaces its own records whole: a monitor made anew in this process (its
        # pusher was replaced) must not take the records of the one before, hence new_id().
        # One history per queue the cluster serves: an outcome counts in its delivery's queue.
        writer = f"{new_id()[:8]}:{worker_id()}"[:64]
        self.histories = {q: HistoryWriter(get_broker(q, config), writer) for q in config.served_queues}
        self.history_outage = Outage(logger, "queue history not written: %s", level=logging.WARNING)

    def loop(self, timeout: float = 1.0) -> bool:
        """Receive what is there (waiting up to `timeout`), save it, answer; False once told to stop."""
        outcomes: list[Outcome] = []
        dead: list[DeadLetterNote] = []
        stop = False
        if self.conn.poll(timeout):
            linger_until = time.monotonic() + self.linger
            while len(outcomes) + len(dead) < BATCH:
                msg = self.conn.recv()
                if msg is STOP:
                    stop = True
                    break
                for one in unbatch(msg):
                    (dead if isinstance(one, DeadLetterNote) else outcomes).append(one)
                # Without a save_limit to prune to, a big batch is saved as soon as
                # nothing more is waiting: every row is written anyway, and lingering
                # would only hold up the pusher, which sends at most BATCH unsaved.
                # With one, lingering fills the batch, and successes beyond
                # save_limit in it are never written (Recorder._unpruned).
                early = len(outcomes) + len(dead) >= self.early_at
                wait = 0.0 if early else max(0.0, linger_until - time.monotonic())
                if not self.conn.poll(wait):
                    break
        if outcomes or dead:
            big = len(outcomes) + len(dead) >= BIG_BATCH
            self.linger = min(LINGER_MAX, self.linger * 2) if big else max(LINGER_MIN, self.linger / 2)
            send(self.conn, self.save(outcomes, dead))
            self._add_history(outcomes)  # after the answer: the pusher's acks do not wait for it
        elif self.recorder.prune_pending:
            self._idle_prune()
        self.write_history(force=stop)
        return not stop

    def _add_history(self, outcomes: list[Outcome]) -> None:
        if len(self.histories) == 1:  # a single-queue cluster's delivery ids name no queue
            next(iter(self.histories.values())).add(outcomes)
            return
        by_queue: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_queue.setdefault(queue_of(o.delivery_id, ""), []).append(o)
        for queue, some in by_queue.items():
            if queue in self.histories:
                self.histories[queue].add(some)

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

    def save(self, outcomes: list[Outcome], dead: list[DeadLetterNote]) -> Saved:
        """Record a batch, waiting out database outages with a growing pause."""
        while True:
            try:
                saved = self.recorder.record(outcomes, dead)
            except DatabaseError as exc:
                db.connections.close_all()
                time.sleep(self.outage.failed(len(outcomes), exc))
                continue
            self.outage.recovered()
            return saved


def main(address: str, authkey: bytes, config: Config) -> None:
    """Process entry point: save results until the pusher says stop; reconnect if it is replaced.

    The process also runs the cluster's scheduler, in a thread; the sentinel's
    SIGTERM stops it (the monitor itself goes on until the pusher says stop).
    """
    process.setup("monitor", config.name, config.log_level)
    scheduler = SchedulerThread(config)
    signal.signal(GRACEFUL_STOP, lambda *_: scheduler.stop())
    scheduler.start()
    try:
        while True:
            conn = process.connect(address, authkey, Hello(Role.MONITOR, os.getpid()))
            if conn is None:
                sys.exit(Exit.UNREACHABLE)
            monitor = Monitor(conn, config)
            try:
                while monitor.loop():
                    pass
                return
            except (EOFError, OSError):
                continue  # the pusher died: its replacement resends what was not saved
            finally:
                conn.close()
    finally:
        scheduler.stop()
        scheduler.join(5.0)  # its pass under way finishes
        db.connections.close_all()
