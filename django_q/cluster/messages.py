"""What the cluster's processes say to each other.

Workers and the monitor connect to the pusher over a local socket and speak
in these frozen dataclasses; STOP ends a conversation.
"""

from __future__ import annotations

import enum
import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from ..package import TaskPackage


def send(conn: Connection, message: object) -> None:
    """Connection.send without multiprocessing's ForkingPickler, which costs a pickler object per
    message and reduces nothing these messages hold; Connection.recv reads it as usual."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def send_many(conn: Connection, messages: list | tuple) -> None:
    """Send one message alone, several as one tuple (the receiver unpacks a tuple)."""
    send(conn, messages[0] if len(messages) == 1 else tuple(messages))


class Control(enum.Enum):
    STOP = "stop"


#: sent by the pusher to a worker or the monitor: finish up and exit
STOP = Control.STOP


class Exit(enum.IntEnum):
    """Exit codes of workers and the monitor, read by the sentinel."""

    STOPPED = 0  # told to stop: not replaced
    UNREACHABLE = 1  # the pusher did not answer: replaced
    RECYCLED = 3  # recycle or max_rss reached: replaced


class Role(enum.Enum):
    WORKER = "worker"
    MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on a new connection to the pusher."""

    role: Role
    pid: int
    index: int = 0


# Job and Outcome pass once or more per task between processes: they
# are named tuples, which pickle and unpickle far cheaper than dataclasses.


class Job(NamedTuple):
    """Pusher to worker: run this verified package."""

    delivery_id: str
    attempts: int
    payload: bytes


class Outcome(NamedTuple):
    """A finished task: worker to pusher to monitor, which saves it."""

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
    worker: str | None = None  # django_q.inflight.worker_id() of the worker that ran it
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
class Rejected:
    """Worker to pusher: the package's signature held but it does not decode."""

    delivery_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class AlreadyDone:
    """Worker to pusher: a redelivered task's success is stored already; ack without running it."""

    delivery_id: str


@dataclass(frozen=True, slots=True)
class DeadLetterNote:
    """Pusher to monitor: keep this package aside and never run it."""

    delivery_id: str
    queue: str
    payload: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Saved:
    """Monitor to pusher: these results are stored; ack `ack_ids` and forget `release_ids`."""

    ack_ids: tuple[str, ...]
    release_ids: tuple[str, ...] = ()
