"""What a Task row holds of a package and of epoch times, the same for a finished task and one still queued.

The pusher's saver thread saves finished tasks (recorder.Recorder); fetch(in_flight=True) and the
admin show tasks still in the broker as unsaved rows (inflight.task_of); the
Django tasks backend reports enqueue times. Each turns package fields and
epoch seconds into row values through this module.
"""

from __future__ import annotations

from datetime import datetime, timezone as dt_timezone
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone

if TYPE_CHECKING:
    from .package import TaskPackage


def epoch_datetime(epoch: float | None) -> datetime | None:
    """A time of a Task row: aware in UTC, or without USE_TZ naive in TIME_ZONE, as Django keeps datetimes then.
    None for no time (None, or 0: a package made without an enqueue time)."""
    if not epoch:
        return None
    moment = datetime.fromtimestamp(epoch, tz=dt_timezone.utc)
    return moment if settings.USE_TZ else timezone.make_naive(moment)


def row_fields(package: TaskPackage) -> dict[str, Any]:
    """The Task fields that come from the package alone."""
    return dict(
        id=package.id,
        name=package.name,
        func=package.func_name[:256],
        hook=package.hook,
        args=package.args,
        kwargs=package.kwargs,
        group=package.group if not package.parent else None,  # an async_iter part is counted in its parent
        parent=package.parent,
        priority=package.priority,
        enqueued=epoch_datetime(package.enqueued),
        history=list(package.history) or None,
    )
