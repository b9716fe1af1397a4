"""What the cluster's processes say to each other.

Workers connect to the pusher over a local socket and speak
in these frozen dataclasses and named tuples; several sent together go as one
Batch; STOP ends a conversation.
"""

from __future__ import annotations

import enum
import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import NamedTuple

from ..outcomes import DeadLetterNote, Outcome, Saved

__all__ = ["STOP", "AlreadyDone", "Batch", "DeadLetterNote", "Exit", "Hello", "Job", "Late", "Outcome", "Rejected",
           "Role", "Saved", "send", "send_many", "unbatch"]


def send(conn: Connection, message: object) -> None:
    """Connection.send without multiprocessing's ForkingPickler, which costs a pickler object per
    message and reduces nothing these messages hold; Connection.recv reads it as usual."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def send_many(conn: Connection, messages: list | tuple) -> None:
    """Send one message alone, several as one Batch (the receiver unpacks it with `unbatch`)."""
    send(conn, messages[0] if len(messages) == 1 else Batch(tuple(messages)))


def unbatch(message: object) -> tuple:
    """The messages that one received message holds: a Batch's, or the message itself."""
    return message.messages if type(message) is Batch else (message,)


class Control(enum.Enum):
    STOP = "stop"


#: sent by the pusher to a worker: finish up and exit
STOP = Control.STOP


class Exit(enum.IntEnum):
    """Exit codes of workers, read by the sentinel."""

    STOPPED = 0  # told to stop: not replaced
    UNREACHABLE = 1  # the pusher did not answer: replaced
    RECYCLED = 3  # recycle or max_rss reached: replaced


class Role(enum.Enum):
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on a new connection to the pusher."""

    role: Role
    pid: int
    index: int = 0


# A Job passes once or more per task between processes: a named tuple
# pickles and unpickles far cheaper than a dataclass. Outcome, DeadLetterNote
# and Saved are django_q.outcomes'.


class Batch(NamedTuple):
    """Several messages sent together, in the order they were said (see send_many)."""

    messages: tuple


class Job(NamedTuple):
    """Pusher to worker: run this verified package."""

    delivery_id: str
    attempts: int
    payload: bytes
    start_by: float = 0.0  # epoch seconds: a rate-limited job not started by then is answered with Late


@dataclass(frozen=True, slots=True)
class Rejected:
    """Worker to pusher: the package's signature held but it does not decode."""

    delivery_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Late:
    """Worker to pusher: a rate-limited job came after its start_by; it did not run and goes back to the broker."""

    delivery_id: str


@dataclass(frozen=True, slots=True)
class AlreadyDone:
    """Worker to pusher: a redelivered task's success is stored already; ack without running it."""

    delivery_id: str
