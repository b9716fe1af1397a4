"""The sentinel: starts the pusher (which saves results and runs the scheduler) and the workers, and brings back any that die.

SIGTERM or SIGINT asks the pusher to stop gracefully (it hands back what did
not start, lets running tasks finish and waits for every result to be saved);
the sentinel then waits for the others to exit and returns.
"""

from __future__ import annotations

import gc
import importlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.context import DefaultContext, ForkContext, ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any, TypeGuard, cast

from django import db

from ..conf import Config
from ..names import Identity
from . import process, worker
from .channels import GRACEFUL_STOP, STOP_SIGNALS, decode_modules, decode_notices, socket_path, task_modules_path
from .messages import Exit

logger = logging.getLogger("django_q")

_collector_paused = False  # by pause_collector(), until the first fork or resume_collector()

EXIT_PATIENCE = 10.0  # seconds every process gets to exit after the pusher stopped
WORKER_PATIENCE = 2.0  # seconds workers get to exit after the pusher stopped (see _wind_down)
# Seconds between two GRACEFUL_STOP signals to a stopping pusher. A pusher
# ignores the signal until it has started (process.setup ignores it, and before
# that it has the sentinel's handler): one sent then is lost. It stops once.
RESTOP = 1.0


class Sentinel:
    """Owns the cluster's processes. `start()`, then `guard()` until it returns."""

    def __init__(self, config: Config, run_once: bool = False, start_method: str | None = None) -> None:
        self.config = config
        self.run_once = run_once
        # The stubs type get_context(str) as BaseContext, which has no Process; every real context has one.
        self.ctx = cast(DefaultContext | ForkContext | ForkServerContext | SpawnContext,
                        multiprocessing.get_context(start_method))
        self.dir = tempfile.mkdtemp(prefix="django_q-")
        self.address = socket_path(self.dir)
        self.authkey = os.urandom(32)
        self.pusher: BaseProcess | None = None
        self.workers: list[BaseProcess | None] = [None] * config.workers
        # Replacements started before the worker they replace is recycled (see
        # worker.ask_for_spare); the pusher gives one no job while that worker is
        # connected. Forked workers ask for theirs through the notice pipe.
        self.spares: list[BaseProcess | None] = [None] * config.workers
        self.notice_r, self.notice_w = os.pipe()
        os.set_blocking(self.notice_r, False)
        os.set_blocking(self.notice_w, False)
        self.stop_requested = False
        self.stopping = False
        self.next_stop_signal = 0.0  # time.monotonic() at which a stopping pusher is signalled again
        self.identity = Identity.new(config.name)  # every pusher publishes the status under it
        self.unloadable: set[str] = set()  # task modules that failed to import here
        self.task_modules_read = 0  # bytes of the task modules file read so far

    def _spawn(self, name: str, role: str, *args: Any) -> BaseProcess:
        # A forked child must not share this process's database sockets: closing
        # one there would end the session here too.
        db.connections.close_all()
        if self.ctx.get_start_method() == "fork":
            # Frozen, what the child inherits is left out of its collections: a full
            # collection writes to every object it looks at, and would copy every
            # inherited page into the child (about 16 MiB each: the cluster's PSS
            # doubles once each process has run one). No gc.collect() first: ~35 ms
            # of CPU before the first fork, and it found nothing to free there; what
            # little cyclic garbage the sentinel's loop makes between forks is kept.
            gc.freeze()
        resume_collector()  # before the first fork: every child runs with it
        proc = self.ctx.Process(
            target=process.start, args=(f"django_q.cluster.{role}", "main", *args), name=f"django_q-{name}"
        )
        proc.start()
        return proc

    def _spawn_pusher(self) -> None:
        if os.path.exists(self.address):
            os.unlink(self.address)  # left by a pusher that died
        self.pusher = self._spawn(
            "pusher", "pusher", self.address, self.authkey, self.config, self.run_once, self.identity
        )

    def _preload(self) -> None:
        """Import, once, what each forked worker (and a new pusher) would otherwise import for itself.

        A recycled worker is a new fork: without this it would import its role's
        module and, on its first task, django_q.tasks and the broker's client
        library (redis-py takes about 80 ms of CPU) every `recycle` tasks. The
        pusher's module brings what its saver and scheduler threads need.
        """
        if self.ctx.get_start_method() != "fork":
            return  # spawned children import everything afresh anyway
        broker = "django_q.brokers.redis" if self.config.broker_kind == "redis" else "django_q.brokers.orm"
        for module in ("django_q.cluster.pusher", "django_q.cluster.worker", "django_q.tasks", broker):
            importlib.import_module(module)
        from .scheduler import Scheduler

        Scheduler(self.config).compile_pass()  # about 5 ms here, for 1.5 MiB the pusher shares
        if self.config.preload_tasks:
            # Before the first fork, once: filling the set writes a reference count
            # to every module's name, which must not copy pages a child shares.
            worker.know_modules(sys.modules)

    def _preload_tasks(self) -> None:
        """Import the modules of the tasks workers ran so far, so that the next worker forks with them.

        Without this every recycled worker imports its tasks' modules, and
        whatever they import, again on its first tasks. A module that fails to
        import here is left to the workers, as before.
        """
        if not self.config.preload_tasks or self.ctx.get_start_method() != "fork":
            return
        try:
            with open(task_modules_path(self.dir), "rb") as f:
                f.seek(self.task_modules_read)
                names, read = decode_modules(f.read())
        except OSError:
            return
        self.task_modules_read += read
        for name in names:
            if name in sys.modules or name in self.unloadable:
                continue
            try:
                importlib.import_module(name)
            except BaseException as exc:  # a module's own code runs here: nothing of it may stop the sentinel
                self.unloadable.add(name)
                logger.warning("task module %s does not import in the sentinel (%s: %s); workers import it "
                               "themselves", name, type(exc).__name__, exc)
                continue
            worker.know_modules([name])  # the next worker forks with it: it needs no mention

    def _spawn_worker(self, index: int) -> BaseProcess:
        # Under spawn and forkserver the child does not inherit the notice pipe.
        notice = self.notice_w if self.ctx.get_start_method() == "fork" else None
        return self._spawn(f"worker-{index}", "worker", self.address, self.authkey, index, self.config, notice)

    def start(self) -> None:
        """Start every process of the cluster."""
        self._preload()
        # The pusher saves results and runs the scheduler too, each in a thread
        # that does no database work before the first outcome (see Pusher.start).
        self._spawn_pusher()
        for i in range(self.config.workers):
            self.workers[i] = self._spawn_worker(i)
        logger.info(
            "cluster %s started: pid %s, %s workers, %s broker, queues %s", self.config.name, os.getpid(),
            len(self.workers), self.config.broker_kind, ", ".join(self.config.served_queues),
        )

    def request_stop(self, *_: Any) -> None:
        """Signal handler: ask for a graceful stop."""
        self.stop_requested = True

    def processes(self) -> list[BaseProcess]:
        return [p for p in (self.pusher, *self.workers, *self.spares) if p is not None]

    def guard(self) -> None:
        """Watch the processes until the cluster stopped; replaces those that die."""
        assert self.pusher is not None
        while True:
            if self.stop_requested and not self.stopping:
                self.stopping = True
                logger.info("cluster %s stopping: finishing running tasks", self.config.name)
            if self.stopping and self.pusher.is_alive() and time.monotonic() >= self.next_stop_signal:
                self.next_stop_signal = time.monotonic() + RESTOP
                _signal(self.pusher, GRACEFUL_STOP)
            if not self.pusher.is_alive():
                if self.stopping or self.pusher.exitcode == 0:
                    break  # stopped, or a run-once cluster found the queue empty
                logger.error("pusher died (exit code %s); starting a new one", self.pusher.exitcode)
                self._spawn_pusher()
            self._replace_dead()
            if self.notice_r in wait([self.notice_r, *(p.sentinel for p in self.processes())], timeout=0.2):
                self._start_spares()
        self._wind_down()

    def _needs_replacing(self, proc: BaseProcess | None) -> TypeGuard[BaseProcess]:
        # Exit code 0 means the pusher told the process to stop: the cluster is
        # ending, so it is not replaced. Recycled workers and crashes are.
        return proc is not None and not proc.is_alive() and proc.exitcode != Exit.STOPPED

    def _start_spares(self) -> None:
        """Read the notice pipe: start the replacement of each worker that is about to be recycled."""
        try:
            notices = decode_notices(os.read(self.notice_r, 65536))
        except BlockingIOError:
            return
        wanted = []
        for i, pid in notices:
            if i >= len(self.workers):
                continue
            proc, spare = self.workers[i], self.spares[i]
            # Only for the worker that asked, while it runs: it may have gone and been replaced already.
            # `i not in wanted`: a worker that asked twice in one read gets one spare, not an untracked second.
            if proc is not None and proc.pid == pid and proc.is_alive() and spare is None and i not in wanted:
                wanted.append(i)
        if wanted and not self.stopping:
            self._preload_tasks()
            for i in wanted:
                self.spares[i] = self._spawn_worker(i)

    def _replace_dead(self) -> None:
        for i, spare in enumerate(self.spares):
            if spare is not None and not spare.is_alive():  # it replaces nobody now; the worker gets another
                # Recycled: the pusher had put it to work (its worker went) before we saw that worker go.
                if spare.exitcode not in (Exit.STOPPED, Exit.RECYCLED):
                    logger.warning("worker-%s's replacement (pid %s) exited with code %s before it took over",
                                   i, spare.pid, spare.exitcode)
                self.spares[i] = None
        gone = [(i, proc) for i, proc in enumerate(self.workers) if self._needs_replacing(proc)]
        if any(self.spares[i] is None for i, _ in gone):
            self._preload_tasks()
        for i, proc in gone:
            if proc.exitcode != Exit.RECYCLED:
                logger.warning("worker-%s (pid %s) died with exit code %s; replacing it", i, proc.pid, proc.exitcode)
            spare, self.spares[i] = self.spares[i], None
            self.workers[i] = spare if spare is not None else self._spawn_worker(i)

    def _wind_down(self) -> None:
        """Wait for the processes to exit once the pusher is gone; kill those that do not."""
        deadline = time.monotonic() + EXIT_PATIENCE
        # The pusher told every worker connected to it to stop, and it stopped
        # only with no job out. A worker still here never reached it (started
        # as the pusher was closing, it would wait CONNECT_PATIENCE in vain), or
        # the pusher died: whatever such a worker runs can no longer be saved.
        workers_by = time.monotonic() + WORKER_PATIENCE
        for proc in [p for p in (*self.workers, *self.spares) if p is not None]:
            proc.join(max(0.0, workers_by - time.monotonic()))
            if proc.is_alive():
                logger.info("%s (pid %s) had not exited %.0fs after the pusher; killing it", proc.name, proc.pid,
                            WORKER_PATIENCE)
                proc.kill()
                proc.join(1.0)
        for proc in self.processes():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                logger.error("%s (pid %s) did not exit; killing it", proc.name, proc.pid)
                proc.kill()
                proc.join(1.0)
        shutil.rmtree(self.dir, ignore_errors=True)
        for fd in (self.notice_r, self.notice_w):
            os.close(fd)
        logger.info("cluster %s stopped", self.config.name)


def pause_collector() -> None:
    """Turn the cyclic garbage collector off until the cluster forks its first process.

    Loading redis-py and the cluster's modules ran about 30 collections, 20-40 ms
    of CPU on the way to the first task (more on a busy machine), which freed
    some 170 objects in all. Left as it is if the project turned it off itself.
    """
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def resume_collector() -> None:
    """Undo pause_collector() (once; nothing if it did not pause the collector)."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.enable()


def run(config: Config, run_once: bool = False, start_method: str | None = None) -> None:
    """Run a cluster in this process until SIGTERM or SIGINT (or, with run_once, an empty queue)."""
    sentinel = Sentinel(config, run_once, start_method)
    process.set_title("sentinel", config.name)
    previous = {sig: signal.signal(sig, sentinel.request_stop) for sig in STOP_SIGNALS}
    try:
        sentinel.start()
        sentinel.guard()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in sentinel.processes():
            if proc.is_alive():
                proc.kill()


def _signal(proc: BaseProcess, signum: int) -> None:
    """Send `signum` to the started process `proc`, unless it exited (and was reaped, by the forkserver) since."""
    assert proc.pid is not None  # started
    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:
        pass
