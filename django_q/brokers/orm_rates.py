"""The database broker's rate limits (the Throttle contract): one RateLog row per queue and key.

A batch of starts is decided in one transaction that holds the rows of its
keys locked, so clusters sharing the database take turns: PostgreSQL and
MariaDB lock the rows with `SELECT ... FOR UPDATE`, in key order so two
batches never wait on each other in a circle; SQLite takes the database's
write lock first, with an UPDATE before the read (a read transaction that
later writes fails at once with "database is locked" when another writer
came in between, whatever the busy timeout). A key's row is made the first
time it is used. Time is this host's clock, as for leases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from django.db import connections, transaction
from django.db.models import F, QuerySet

from ..exceptions import BrokerError
from ..models import RateLog
from ..rates import Limit, take


def take_starts(alias: str, queue: str, wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]) -> list[float]:
    """Take starts from the logs of queue `queue` in database `alias` (see Throttle.take_starts)."""
    keys = sorted({key for keys in wanted for key in keys})
    if not keys:
        return [0.0] * len(wanted)
    logs = RateLog.objects.using(alias)
    rows = logs.filter(queue=queue, key__in=keys)
    for _ in range(2):
        with transaction.atomic(using=alias):
            if connections[alias].vendor == "sqlite":
                rows.update(key=F("key"))
                found = list(rows)
            else:
                found = list(rows.select_for_update().order_by("key"))
            if len(found) == len(keys):
                return _take(logs, found, wanted, limits)
        # Outside the transaction: a concurrent insert of the same row is ignored, not waited on while locked.
        logs.bulk_create([RateLog(queue=queue, key=key) for key in keys], ignore_conflicts=True)
    raise BrokerError(f"the rate logs of queue {queue!r} were deleted as soon as they were made")


def _take(
    logs: QuerySet, found: list[RateLog], wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit]
) -> list[float]:
    starts = {row.key: json.loads(row.starts) for row in found}
    waits = take(starts, wanted, limits, time.time())
    for row in found:
        text = json.dumps(starts[row.key])
        if text != row.starts:
            logs.filter(pk=row.pk).update(starts=text)
    return waits


def purge(alias: str, queue: str) -> None:
    """Forget the rate logs of queue `queue`."""
    RateLog.objects.using(alias).filter(queue=queue).delete()
