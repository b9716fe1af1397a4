"""The worker: takes jobs from the pusher, runs them (django_q.runner), and hands back each outcome.

A worker is replaced after `recycle` tasks, or after a task that left it above
`max_rss` KiB. It is killed from outside (by the pusher) when a task runs past
its timeout, so nothing here has to interrupt a running function.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

from ..conf import Config
from ..context import report_progress_to
from ..exceptions import PackageError, TaskCancelled
from ..names import worker_id
from ..package import unpack
from ..runner import checked, execute, function, remember_functions, running_delivery, succeeded_before
from . import process
from .channels import (
    CANCEL_SIGNAL, Notice, cancel_path, decode_cancels, encode_module, encode_notice, folder_of, state_path,
    task_modules_path,
)
from .messages import STOP, AlreadyDone, Exit, Hello, Job, Late, Outcome, Rejected, Role, send_many, unbatch
from .runstate import RunState

__all__ = ["TaskCancelled", "main"]  # TaskCancelled lives in django_q.exceptions; importable here as before

logger = logging.getLogger("django_q")

_cancel_file: str | None = None
# Set by the first cancel signal: from then on each job is looked up in the
# cancel file before it starts (before it, no job of this worker was cancelled).
_cancel_signalled = False


# Modules of task functions this worker imported itself (not inherited from the
# sentinel): each is named once, a line each, in the task modules file, which the
# sentinel imports before it forks the next worker (see Config.preload_tasks).
_task_modules_file: str | None = None
_known_modules: set[str] = set()
_inherited = False  # _known_modules was filled by the sentinel before it forked us


def know_modules(names: Iterable[str]) -> None:
    """Take these modules as known to the workers the sentinel forks from now on (the sentinel calls it).

    Filled there, the set is built once in pages every fork shares. Filled in
    each worker, it wrote to the name of every module the worker inherited
    (a reference count each, even for a name already in the set), about
    0.6 MiB of pages copied per worker.
    """
    global _inherited
    _known_modules.update(names)
    _inherited = True


def _note_module(func: Any) -> None:
    module = getattr(func, "__module__", None)
    if module is None or module in _known_modules:
        return
    _known_modules.add(module)
    if _task_modules_file is not None:
        try:
            with open(_task_modules_file, "a") as f:
                f.write(encode_module(module))
        except OSError:
            pass  # the cluster is going away; the next worker imports the module itself


def _cancel_wanted() -> set[str]:
    if _cancel_file is None or not _cancel_signalled:
        return set()
    try:
        with open(_cancel_file) as f:
            return decode_cancels(f.read())
    except OSError:
        return set()


def _on_cancel_signal(signum: int, frame: Any) -> None:
    global _cancel_signalled
    _cancel_signalled = True
    running = running_delivery()
    if running is not None and running in _cancel_wanted():
        raise TaskCancelled()


def rss_kib() -> int:
    """Resident memory of this process in KiB."""
    import psutil  # asked only with max_rss set: psutil stays out of a worker that never needs it

    return psutil.Process().memory_info().rss // 1024


# A worker asks the sentinel for its replacement as it starts a job after
# which the jobs it holds take it to `recycle`: the replacement is started and
# connected by the time it goes (its jobs in hand are at most about
# pusher.PREFETCH_WORK of work, or the one job running), and no replacement
# waits on a worker that an empty queue keeps short of its recycle.


def ask_for_spare(notice_fd: int | None, index: int) -> None:
    """Tell the sentinel (through its notice pipe) that worker `index`, this process, is about to be recycled."""
    if notice_fd is None:
        return
    try:
        os.write(notice_fd, encode_notice(Notice(index, os.getpid())))
    except OSError:
        pass  # the sentinel is gone or busy: it replaces this worker when it exits, as before


# Outcomes of short tasks go to the pusher together, sent by the main thread: as
# a task ends once the oldest has waited FLUSH_AFTER seconds or OUTBOX_MAX wait,
# when the worker has no job left, and before a job of a function that ran
# FLUSH_AFTER or longer last time here. Behind a task that runs long unexpectedly,
# a thread sends what waited BACKSTOP seconds. That thread looks in once a
# BACKSTOP while the worker has jobs, not at each message: when it sent every
# message, the GIL changed hands between the two threads at each one, which
# cost a drain of short tasks 4-7 % on a slow 2-core machine (see the
# performance page). The pusher learns which job runs, and since when, from
# the worker's RunState instead.
OUTBOX_MAX = 32
FLUSH_AFTER = 0.002
BACKSTOP = 0.05


class Worker:
    """One worker's conversation with the pusher; `loop()` serves one message."""

    def __init__(
        self, conn: Connection, index: int, config: Config, state: RunState, notice_fd: int | None = None
    ) -> None:
        self.conn = conn
        self.index = index
        self.config = config
        self.state = state
        self.notice_fd = notice_fd
        self.done = 0
        self.spare_asked = False
        self.taken = 0  # jobs taken from the queue on this connection (the pusher counts its answers)
        self.jobs: deque[Job] = deque()  # sent together, run in order
        self.outbox: list[Any] = []  # messages for the pusher, sent together by flush()
        self.outbox_since = 0.0  # monotonic time the oldest message in the outbox was added
        self.lock = threading.Condition()
        self.closed = False
        self.slow: set[str] = set()  # functions whose last run here took FLUSH_AFTER or longer
        self.busy = False  # jobs in hand: the backstop looks in every BACKSTOP rather than wait to be woken
        threading.Thread(target=self._backstop, name="django_q-backstop", daemon=True).start()

    def loop(self) -> Exit | None:
        """Serve one job (or STOP); an Exit once the worker should end."""
        if self.jobs:
            job = self.jobs.popleft()
        else:
            self.flush()  # everything said before waiting for more work
            self.busy = False
            job, *rest = unbatch(self.conn.recv())  # several jobs may come together
            self.busy = True
            self.jobs.extend(rest)
        if job is STOP:
            return Exit.STOPPED
        if not isinstance(job, Job):
            return None
        self.taken += 1
        # The state says a job was taken once it is running (one write), or once it is answered
        # without running: until then the pusher counts it as not taken, which is true of a
        # job that has not started, and hands it to another worker if this one dies.
        try:
            task = unpack(job.payload, self.config.package_limit, verified=True)
        except PackageError as exc:
            self._write_state()
            self.say(Rejected(job.delivery_id, str(exc)))
            return None
        if job.attempts > 1 and succeeded_before(task.id):
            self._write_state()
            self.say(AlreadyDone(job.delivery_id))  # its cluster died between save and ack
            return None
        if job.delivery_id in _cancel_wanted():  # cancelled while it waited behind the running job
            self._write_state()
            now = time.time()
            self.say(Outcome(job.delivery_id, task, False, "cancelled before it started", now, now, job.attempts,
                             task.cluster or self.config.name, cancelled=True, worker=worker_id()))
            return None
        self._write_state(job.delivery_id, task.timeout or self.config.timeout)
        if not self.spare_asked and self.done + 1 + len(self.jobs) >= self.config.recycle:
            self.spare_asked = True
            try:
                function(task.func)  # its module is noted first, so that the replacement forks with it
            except Exception:
                pass  # call() records why it does not import
            ask_for_spare(self.notice_fd, self.index)
        if job.start_by and time.time() > job.start_by:
            # Its rate limit counted its start when it was fetched: run later, it could crowd a later window.
            self._write_state()
            self.say(Late(job.delivery_id))
            return None
        func = task.func_name
        if self.outbox and func in self.slow:
            self.flush()  # what ran before need not wait out this one
        outcome = execute(task, job.delivery_id, job.attempts, self.config)
        self._write_state()
        if outcome.stopped - outcome.started >= FLUSH_AFTER:  # the span the pusher's mean_run goes by too
            self.slow.add(func)
        else:
            self.slow.discard(func)
        self.say(outcome)
        self.done += 1
        if self.done >= self.config.recycle or (self.config.max_rss and rss_kib() > self.config.max_rss):
            self.flush()
            logger.info("worker-%s (pid %s) recycled after %s tasks", self.index, os.getpid(), self.done)
            return Exit.RECYCLED
        return None

    def _write_state(self, running: str | None = None, timeout: float | None = None) -> None:
        self.state.write(self.taken, running, timeout)

    def say(self, message: Any) -> None:
        """Queue a message for the pusher; sent with others (see OUTBOX_MAX, FLUSH_AFTER)."""
        with self.lock:
            now = time.monotonic()
            if not self.outbox:
                self.outbox_since = now
                self.lock.notify()  # the backstop, if it waits (the worker was idle); else nothing to do
            self.outbox.append(message)
            if len(self.outbox) >= OUTBOX_MAX or now - self.outbox_since >= FLUSH_AFTER:
                self._flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()

    def _backstop(self) -> None:
        """Send messages that waited BACKSTOP, however long the task under way runs.

        While tasks keep ending, the main thread sends each message before this
        thread's turn comes: the thread looks in once a BACKSTOP while the
        worker has jobs in hand, and only an idle worker's first message wakes
        it (a wake-up is a hand-over of the GIL, which the main thread waits for).
        """
        try:
            while True:
                with self.lock:
                    while not self.outbox and not self.busy and not self.closed:
                        self.lock.wait()
                    if self.closed:
                        return
                    due = (self.outbox_since if self.outbox else time.monotonic()) + BACKSTOP
                time.sleep(max(0.0, due - time.monotonic()))
                with self.lock:
                    if self.outbox and time.monotonic() >= self.outbox_since + BACKSTOP:
                        self._flush()
        except (OSError, EOFError):
            return  # the pusher is gone: the main thread finds out on its next send or receive

    def _flush(self) -> None:
        """Send what the worker has to say, in one message (the lock held); an outcome whose result
        does not pickle is replaced by a failure saying so (a message pickles fully before it is written)."""
        if not self.outbox:
            return
        messages = self.outbox
        self.outbox = []
        try:
            send_many(self.conn, messages)
        except (pickle.PicklingError, TypeError, AttributeError):
            fixed = tuple(checked(m) if isinstance(m, Outcome) else m for m in messages)
            send_many(self.conn, fixed)


def main(address: str, authkey: bytes, index: int, config: Config, notice_fd: int | None = None) -> None:
    """Process entry point: serve the pusher (a new one, if it is replaced) until stopped or recycled.

    `notice_fd` is the sentinel's notice pipe (forked children only), where a
    worker about to be recycled asks for its replacement (see ask_for_spare).
    """
    global _cancel_file, _task_modules_file
    process.setup(f"worker-{index}", config.name, config.log_level)
    folder = folder_of(address)
    _cancel_file = cancel_path(folder, os.getpid())
    remember_functions(_note_module)
    if config.preload_tasks:
        _task_modules_file = task_modules_path(folder)
        if not _inherited:  # spawned or forkserver: what this process imported at start needs no mention
            _known_modules.update(sys.modules)
    signal.signal(CANCEL_SIGNAL, _on_cancel_signal)
    state = RunState(state_path(folder, os.getpid()), writer=True)  # before the pusher hears of us
    report_progress_to(state.write_progress)
    done, spare_asked = 0, False
    while True:
        conn = process.connect(address, authkey, Hello(Role.WORKER, os.getpid(), index))
        if conn is None:
            state.remove()
            sys.exit(Exit.UNREACHABLE)
        worker = Worker(conn, index, config, state, notice_fd)
        worker.done, worker.spare_asked = done, spare_asked
        try:
            while (end := worker.loop()) is None:
                pass
        except (EOFError, OSError):
            done, spare_asked = worker.done, worker.spare_asked
            continue  # the pusher died; the sentinel starts another, so reconnect
        finally:
            worker.close()
            conn.close()
        state.remove()  # the pusher keeps its own mapping of it
        sys.exit(end)
