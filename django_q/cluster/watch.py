"""The pusher's side channels to its workers: what each runs, timeouts, and cancel().

Which job a worker runs, and since when, is read from its state file
(cluster.runstate); that sets the job's deadline, has it marked running in
the broker (by the lease thread), and tells a cancel request for it from one
for a job still waiting in the worker. A worker past its deadline, or past the
grace period of its cancelled job, is killed; its connection then closes and
the pusher records why (Pusher._gone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..brokers.base import Delivery
from ..conf import Config
from ..exceptions import PackageError
from ..package import unpack
from .channels import CANCEL_SIGNAL, KILL_SIGNAL, cancel_path, encode_cancels
from .leases import Leases
from .runstate import Seen
from .slots import Slot

logger = logging.getLogger("django_q")


class Watch:
    """Reads the workers' state files, writes their cancel files, and signals them (through `kill`)."""

    def __init__(
        self, config: Config, folder: str, leases: Leases, clock: Callable[[], float],
        kill: Callable[[int, int], None],
    ) -> None:
        self.config = config
        self.folder = folder
        self.leases = leases
        self.clock = clock
        self.kill = kill
        self.cancelling: set[str] = set()  # cancel requests seen, and carried out or waiting for the job to start

    def observe(self, slot: Slot) -> Seen | None:
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

    def timeouts(self, slots: Iterable[Slot]) -> None:
        """Kill each worker past its task's timeout, or past the grace period of its cancelled task."""
        slots = [s for s in slots if not s.killed]
        for slot in slots:
            self.observe(slot)
        now = self.clock()
        for slot in slots:
            running = slot.running.id if slot.running is not None else None
            if slot.cancel_by is not None and now > slot.cancel_by and running == slot.cancel_id:
                logger.warning("worker pid %s did not stop its cancelled task in time; killing it", slot.pid)
            elif slot.deadline is not None and now > slot.deadline:
                slot.cancel_by = slot.cancel_id = None
                logger.error("%s passed its timeout; killing its worker (pid %s)", self._named(slot.running), slot.pid)
            else:
                continue
            slot.killed = True
            self.signal(slot, KILL_SIGNAL)

    def _named(self, delivery: Delivery | None) -> str:
        """'task <name> (<id>) <func>' of a running delivery, for the log."""
        if delivery is None:
            return "a task"
        try:
            task = unpack(delivery.payload, self.config.package_limit, verified=True)
        except PackageError:
            return f"delivery {delivery.id}"
        return f"task {task.name} ({task.id}) {task.func_name}"

    def cancel(self, wanted: set[str], slots: Iterable[Slot]) -> None:
        """Stop the running jobs among `wanted`, and have workers skip those they hold but did not start."""
        for slot in slots:
            if not any(job.id in wanted for job in slot.jobs):
                continue
            self.observe(slot)
            if slot.running is not None and slot.running.id in wanted:
                self._stop_running(slot)
            else:
                self._tell(slot)  # it skips the job when it comes to it
                self.signal(slot, CANCEL_SIGNAL)  # its first signal makes it read the cancel file

    def _stop_running(self, slot: Slot) -> None:
        """Ask the worker to stop its running job (it raises TaskCancelled); kill it after cancel_grace."""
        if slot.running is None or slot.cancel_id == slot.running.id:
            return  # nothing runs, or its stop is under way
        logger.info("cancelling delivery %s running in worker pid %s", slot.running.id, slot.pid)
        slot.cancel_by = self.clock() + self.config.cancel_grace
        slot.cancel_id = slot.running.id
        self._tell(slot)
        self.signal(slot, CANCEL_SIGNAL)

    def signal(self, slot: Slot, signum: int) -> None:
        """Every signal the pusher sends a worker goes through here."""
        try:
            self.kill(slot.pid, signum)
        except ProcessLookupError:
            pass  # gone already: Pusher._gone records it

    def _tell(self, slot: Slot) -> None:
        """Write the worker's cancel file: which of its jobs cancel() wants stopped or skipped."""
        ids = [job.id for job in slot.jobs if job.id in self.cancelling]
        try:
            with open(cancel_path(self.folder, slot.pid), "w") as f:
                f.write(encode_cancels(ids))
        except OSError as exc:
            logger.error("could not write the cancel file of worker pid %s: %s", slot.pid, exc)
