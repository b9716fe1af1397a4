"""When a schedule runs and with what: occurrences of every schedule type, and argument text.

Pure functions, no database and no clock: the scheduler passes `now` and the
time zone in, so tests step through DST days and month ends without freezing
time. Every datetime is aware; results are in UTC.

The occurrences of a schedule form a series fixed by its anchor, the instant
of the run the series started from (the first `next_run`):

- ONCE: `next_run` only.
- MINUTES, HOURLY: every `minutes` (60) minutes of real time from the anchor,
  so "every 90 minutes" stays 90 minutes across a DST change.
- DAILY, WEEKLY, BIWEEKLY: the anchor's wall-clock time in the time zone,
  every 1, 7 or 14 days: a 09:00 schedule stays at 09:00 through DST.
- MONTHLY, BIMONTHLY, QUARTERLY, YEARLY: the anchor's day of month and
  wall-clock time every 1, 2, 3 or 12 months; a month without that day runs
  on its last day, and the next month is back on the anchor's day
  (Jan 31 -> Feb 29 -> Mar 31; Feb 29 yearly -> Feb 28 -> ... -> Feb 29).
- CRON: the expression read in the time zone's wall-clock time.

Counting from the anchor rather than from the previous run is what keeps a
month end or a DST gap from shifting every later run. A wall-clock time that
a DST change skips runs as many minutes after the change as it was into the
gap (02:30 -> 03:30 on that day only); one that happens twice runs the first
time only.
"""

from __future__ import annotations

import ast
import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from .exceptions import ScheduleError
from .extras import installed, missing

__all__ = ["ScheduleError", "Recurrence", "plan", "parse_args", "parse_kwargs"]

ONCE, MINUTES, HOURLY, DAILY, WEEKLY, BIWEEKLY = "O", "I", "H", "D", "W", "BW"
MONTHLY, BIMONTHLY, QUARTERLY, YEARLY, CRON = "M", "BM", "Q", "Y", "C"
DAYS = {DAILY: 1, WEEKLY: 7, BIWEEKLY: 14}
MONTHS = {MONTHLY: 1, BIMONTHLY: 2, QUARTERLY: 3, YEARLY: 12}
TYPES = frozenset({ONCE, MINUTES, HOURLY, CRON, *DAYS, *MONTHS})
CRON_FEATURE = "A cron schedule"  # what the error names when croniter (the [cron] extra) is missing

# With catch_up off, an occurrence at most this late still runs: it was due
# during one of the scheduler's last passes (or a short outage), not missed
# while no cluster was up.
GRACE = timedelta(seconds=60)
# Cron occurrences skipped because a DST fold made them repeat an earlier
# instant; past this, the expression is treated as never matching.
CRON_STEPS = 10_000
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Recurrence:
    """The series of occurrences of a repeating schedule; see the module docstring."""

    kind: str
    anchor: datetime
    tz: tzinfo
    minutes: int | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TYPES or self.kind == ONCE:
            raise ScheduleError(f"{self.kind!r} is not a repeating schedule type")
        if self.kind == MINUTES and not (isinstance(self.minutes, int) and self.minutes > 0):
            raise ScheduleError(f"a minutes schedule needs a positive number of minutes, not {self.minutes!r}")
        if self.kind == CRON:
            if not installed("croniter"):  # the scheduler logs this and tries the row again later
                raise missing("croniter", CRON_FEATURE)
            from croniter import croniter  # cron schedules alone need croniter

            if not self.cron or not croniter.is_valid(self.cron):
                raise ScheduleError(f"{self.cron!r} is not a valid cron expression")
        object.__setattr__(self, "anchor", _utc(self.anchor))

    def after(self, t: datetime) -> datetime:
        """The first occurrence strictly after `t`, in UTC."""
        t = _utc(t)
        if self.kind in (MINUTES, HOURLY):
            step = timedelta(minutes=self.minutes if self.kind == MINUTES and self.minutes else 60)
            return self.anchor + ((t - self.anchor) // step + 1) * step
        if self.kind == CRON:
            return self._cron_after(t)
        # Estimate the index from the calendar, then walk to the exact one:
        # wall-clock and UTC differ by the DST offset, a few steps at most.
        n = self._estimate(self._wall(t))
        while self._at(n) > t:
            n -= 1
        while self._at(n) <= t:
            n += 1
        return self._at(n)

    def contains(self, t: datetime) -> bool:
        """Whether `t` is one of the occurrences."""
        return self.after(_utc(t) - MICROSECOND) == _utc(t)

    def _wall(self, t: datetime) -> datetime:
        return t.astimezone(self.tz).replace(tzinfo=None)

    def _local(self, wall: datetime) -> datetime:
        # fold=0: a time that happens twice is its first instance; one in a DST
        # gap gets the offset from before the gap, which lands after it.
        return wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def _estimate(self, wall: datetime) -> int:
        start = self._wall(self.anchor)
        if self.kind in DAYS:
            return (wall.date() - start.date()).days // DAYS[self.kind]
        return ((wall.year - start.year) * 12 + wall.month - start.month) // MONTHS[self.kind]

    def _at(self, n: int) -> datetime:
        """Occurrence number `n`, counted from the anchor (0); negative counts go back."""
        if n == 0:
            return self.anchor  # exactly, even if its wall-clock time happens twice
        start = self._wall(self.anchor)
        if self.kind in DAYS:
            return self._local(start + timedelta(days=n * DAYS[self.kind]))
        months = start.month - 1 + n * MONTHS[self.kind]
        year, month = start.year + months // 12, months % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return self._local(start.replace(year=year, month=month, day=day))

    def _cron_after(self, t: datetime) -> datetime:
        from croniter import CroniterBadDateError, croniter  # cron schedules alone need croniter

        # Start as far back as a DST gap in the last day moved the clock forward:
        # a wall-clock match in the gap runs after it, possibly after `t`.
        gap = _offset(t.astimezone(self.tz)) - _offset((t - timedelta(days=1)).astimezone(self.tz))
        matches = croniter(self.cron or "", self._wall(t) - max(gap, timedelta(0)))
        for _ in range(CRON_STEPS):
            try:
                candidate = self._local(matches.get_next(datetime))
            except CroniterBadDateError as exc:
                raise ScheduleError(f"cron expression {self.cron!r} never matches") from exc
            if candidate > t:  # not an instant of a DST fold's first pass, seen again in its second
                return candidate
        raise ScheduleError(f"cron expression {self.cron!r} has no occurrence after {t.isoformat()}")


@dataclass(frozen=True)
class Step:
    """What one pass of the scheduler does with a due schedule."""

    run: bool  # enqueue a task for it now
    next_run: datetime | None  # UTC; None: the schedule is finished
    repeats: int
    anchor: datetime | None  # the series' anchor to store, UTC
    delete: bool = False  # a finished ONCE schedule with negative repeats is deleted


def plan(
    kind: str,
    next_run: datetime,
    repeats: int,
    now: datetime,
    tz: tzinfo,
    *,
    anchor: datetime | None = None,
    minutes: int | None = None,
    cron: str | None = None,
    catch_up: bool = True,
    claimed: bool = False,
    busy: bool = False,
) -> Step:
    """Decide what becomes of a schedule due at `next_run` (<= `now`).

    `repeats` counts runs down: a positive count finishes at 0, a negative one
    runs forever and keeps counting down (-1, -2, ...), as in django-q. A
    finished schedule is kept with `next_run` None and `repeats` 0, except a
    ONCE schedule with negative repeats, which is deleted (django-q's
    documented behaviour: give it positive repeats to keep its result).

    Missed occurrences (the schedule fell behind `now` by one or more) run once
    with `catch_up`, not once each; without it they are skipped unless the
    latest is less than GRACE late. Either way the next run is the first
    occurrence after `now`. A ONCE schedule always runs. `claimed`: an earlier
    pass claimed this run and may not have enqueued it; it runs whatever the time.
    `busy`: the schedule must not overlap and its previous run is still queued
    or running; the occurrence is skipped (not counted in `repeats`), unless
    it is claimed already.
    """
    if kind == ONCE:
        return Step(run=True, next_run=None, repeats=0, anchor=None, delete=repeats < 0)
    # A claimed run's next_run is the claim's hold, not an occurrence: keep its anchor.
    if anchor is None or not (claimed or Recurrence(kind, anchor, tz, minutes, cron).contains(next_run)):
        anchor = next_run  # a new series: the first run, or next_run was moved off the old one
    series = Recurrence(kind, anchor, tz, minutes, cron)
    following = series.after(now)
    run = claimed or (not busy and (catch_up or series.after(_utc(now) - GRACE) <= _utc(now)))
    if run:
        repeats -= 1
    if repeats == 0:
        return Step(run=run, next_run=None, repeats=0, anchor=series.anchor)
    return Step(run=run, next_run=following, repeats=repeats, anchor=series.anchor)


def parse_args(text: str | None) -> tuple:
    """The positional arguments in `text` ("1, 'a', [2]"); only Python literals are accepted."""
    call = _call(text, "args")
    if call.keywords:
        raise ScheduleError("args: keyword arguments belong in kwargs")
    return tuple(_literal(node, "args") for node in call.args)


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """The keyword arguments in `text` ("x=1, y='a'", or a dict literal); Python literals only."""
    call = _call(text, "kwargs")
    names = [kw.arg for kw in call.keywords]
    if len(set(names)) < len(names):
        raise ScheduleError(f"kwargs: a name is given twice: {text!r}")
    if not call.args:
        return {str(kw.arg): _literal(kw.value, "kwargs") for kw in call.keywords}  # _call refused **
    # django-q2 also took a dict literal: "{'x': 1}".
    if len(call.args) == 1 and not call.keywords:
        value = _literal(call.args[0], "kwargs")
        if isinstance(value, dict) and all(isinstance(k, str) and k.isidentifier() for k in value):
            return value
    raise ScheduleError("kwargs: expected name=value pairs such as x=1, y='a'")


def _call(text: str | None, what: str) -> ast.Call:
    """`text` parsed as the arguments of a call `f(...)`: nothing runs, and nothing but a call is accepted."""
    if not text or not text.strip():
        return ast.Call(func=ast.Name("f"), args=[], keywords=[])
    try:
        tree = ast.parse(f"f({text})", mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte
        raise ScheduleError(f"{what}: not a list of Python literals: {text!r}") from exc
    call = tree.body
    # Text that closes the parenthesis ("1), g(2") parses as something else.
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        raise ScheduleError(f"{what}: not a list of Python literals: {text!r}")
    if any(isinstance(node, ast.Starred) for node in call.args) or any(kw.arg is None for kw in call.keywords):
        raise ScheduleError(f"{what}: * and ** unpacking are not allowed: {text!r}")
    return call


def _literal(node: ast.AST, what: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ScheduleError(f"{what}: {ast.unparse(node)[:80]} is not a Python literal") from exc


def _offset(t: datetime) -> timedelta:
    """The UTC offset of an aware datetime (utcoffset() is None only for a naive one)."""
    return t.utcoffset() or timedelta(0)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"an aware datetime is needed, got {t!r}")
    return t.astimezone(UTC)
