"""What became of a delivery: a finished task to save, or a package set aside, and what was saved.

A worker (or sync mode) makes an `Outcome`; the pusher makes a
`DeadLetterNote` for a package it will not run; the recorder saves both and
answers with `Saved`, after which the deliveries may be acked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .package import TaskPackage


# An Outcome passes between processes once or more per task: a named tuple
# pickles and unpickles far cheaper than a dataclass.
class Outcome(NamedTuple):
    """A finished task: worker to pusher, whose saver thread saves it."""

    delivery_id: str
    task: TaskPackage
    success: bool
    result: Any  # the return value, or the traceback text of a failure
    started: float  # epoch seconds
    stopped: float
    attempts: int
    cluster: str
    ack: bool = True  # False: release the delivery so that it is delivered again
    cancelled: bool = False  # stopped by cancel(); success is False
    exception: str | None = None  # dotted path of the exception class of a failure
    worker: str | None = None  # django_q.names.worker_id() of the worker that ran it
    # Set when the task's retry policy runs it again: the package (with this
    # attempt in its history) the broker gets back, due in `retry_in` seconds.
    retry_payload: bytes | None = None
    retry_in: float = 0.0

    def with_result(self, success: bool, result: Any) -> Outcome:
        return self._replace(success=success, result=result, retry_payload=None)

    @property
    def status(self) -> str:
        """The Task.status this outcome is saved with."""
        return "cancelled" if self.cancelled else "success" if self.success else "failure"


@dataclass(frozen=True, slots=True)
class DeadLetterNote:
    """A package that must never run: kept aside as a DeadLetter."""

    delivery_id: str
    queue: str
    payload: bytes  # whole, or only the package's header when it was over package_limit
    reason: str
    size: int | None = None  # bytes of the package as delivered; None: len(payload)


@dataclass(frozen=True, slots=True)
class Saved:
    """What a batch's save settled: ack `ack_ids`, and release `release_ids` to be delivered again."""

    ack_ids: tuple[str, ...]
    release_ids: tuple[str, ...] = ()
