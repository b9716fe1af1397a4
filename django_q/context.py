"""The context of the task running now: `current_task()`, and the progress it reports.

The runner sets the context (a contextvar, so that a coroutine task and what
it awaits see it too) for the length of one call of a task's function, and
clears it after. A progress report costs the task no broker round trip: it is
checked here and handed to the process's progress sink, which in a worker
writes it into the worker's state file (cluster.runstate); the pusher reads
it there as it reads which job runs, and publishes it with the cluster's
status (django_q.status), where fetch(id, in_flight=True), the admin and
qmonitor read it. In sync mode there is no sink: the last report stays on the
context only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from numbers import Real

NOTE_MAX = 200  # characters of a progress note kept; the rest is cut off


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report: `done` of `total` (None: unknown), and a note."""

    done: float
    total: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, float | str | None]:
        """What fetch(id, in_flight=True).progress gives: done, total, note."""
        return {"done": self.done, "total": self.total, "note": self.note}


# What a process does with a progress report of the running task (a worker
# writes it to its state file); None: it is only kept on the context.
ProgressSink = Callable[[Progress], None]
_sink: ProgressSink | None = None


def describe(progress: dict | None) -> str:
    """A progress report (Progress.as_dict()) for people: '3/10 (30%) copying', '3 copying'; '' for None."""
    if not progress:
        return ""
    done, total = progress.get("done", 0), progress.get("total")
    text = _shown(done) if total is None else f"{_shown(done)}/{_shown(total)}"
    if total:
        text += f" ({100 * done / total:.0f}%)"
    note = progress.get("note") or ""
    return f"{text} {note}" if note else text


def _shown(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def report_progress_to(sink: ProgressSink | None) -> None:
    """In a worker process: hand each progress report of a running task to `sink`."""
    global _sink
    _sink = sink


class TaskContext:
    """What a running task can know of itself, and its way to report progress."""

    __slots__ = ("_live", "_outermost", "attempt", "cluster", "func", "group", "id", "last_progress", "name")

    def __init__(self, id: str, name: str, func: str, group: str | None, attempt: int, cluster: str) -> None:
        self.id = id
        self.name = name
        self.func = func  # the dotted path of the task's function
        self.group = group
        self.attempt = attempt  # deliveries of the task so far, this one included
        self.cluster = cluster  # the name of the queue it runs in
        self.last_progress: Progress | None = None
        self._live = True
        self._outermost = True  # not run in sync mode inside another task (see running())

    def progress(self, done: float, total: float | None = None, note: str = "") -> None:
        """Report that `done` of `total` (None: unknown) units are done, with an optional note.

        Raises TypeError for a value that is not a number (or a note that is
        not a string), ValueError for a negative or non-finite number, and
        RuntimeError once the task this context belongs to has returned. A
        note longer than NOTE_MAX characters is cut to that length.
        """
        report = Progress(_amount("done", done), None if total is None else _amount("total", total),
                          _note(note))
        if not self._live:
            raise RuntimeError(f"task {self.name} ({self.id}) has finished: its progress can no longer change")
        self.last_progress = report
        if _sink is not None and self._outermost:
            _sink(report)

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} ({self.id}) attempt {self.attempt} in {self.cluster}>"


def _amount(argument: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"progress() {argument} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"progress() {argument} must be a finite number of 0 or more, not {value!r}")
    return value if isinstance(value, int) else number


def _note(note: object) -> str:
    if not isinstance(note, str):
        raise TypeError(f"progress() note must be a string, not {type(note).__name__}")
    return note[:NOTE_MAX]


_current: ContextVar[TaskContext | None] = ContextVar("django_q_current_task", default=None)


def current_task() -> TaskContext | None:
    """The context of the task running now in this process (or coroutine), or None outside a task."""
    return _current.get()


@contextmanager
def running(context: TaskContext) -> Iterator[TaskContext]:
    """Make `context` the current task's while the block runs; it reports no progress after.

    A task run in sync mode inside a running task is current while it runs,
    but its reports stay on its context: the sink (the worker's state file)
    shows the progress of the task the worker runs.
    """
    context._outermost = _current.get() is None
    token = _current.set(context)
    try:
        yield context
    finally:
        context._live = False
        _current.reset(token)
