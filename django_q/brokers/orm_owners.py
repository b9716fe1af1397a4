"""The database broker's owners: which cluster leased each row (OrmQ.owner), and releasing a dead cluster's leases.

Each cluster's beat updates its LeaseOwner row; an owner of old leases that
never beat is given a row as never seen. The release is one UPDATE of
the dead owners' live leases, made so that an owner beating at that moment
either keeps every lease or sees that it lost them:

- SQLite: one UPDATE whose subquery picks the silent owners; a write
  statement holds the database's write lock from its first read, so no beat
  can land between the subquery and the update.
- PostgreSQL, MariaDB: in one transaction, the silent owners' LeaseOwner rows
  are locked (SELECT ... FOR UPDATE, which skips a row whose beat committed
  while it waited), then their rows are released.

An owner still publishing a status that has not expired is not dead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet

from ..models import Heartbeat, LeaseOwner
from . import wakeup


class _Host(Protocol):
    """What OrmOwners uses of the broker it is mixed into."""

    name: str
    alias: str
    lease: float

    def _db(self) -> AbstractContextManager[BaseDatabaseWrapper]: ...

    def _rows(self) -> QuerySet: ...

    def _leased_rows(self, ids: Sequence[str]) -> QuerySet: ...

    def _old_leases(self, now: float, dead_after: float) -> QuerySet: ...

    def _release(self, conn: BaseDatabaseWrapper, dead: set[str], now: float, dead_after: float) -> None: ...


class OrmOwners:
    """The database broker's `beat` and `held`, mixed into OrmBroker (they use its `_db`, `_rows`, `_leased_rows`)."""

    def beat(self: _Host, owner: str, dead_after: float) -> bool:
        """Record `owner` alive now; release the leases of owners silent for `dead_after` seconds."""
        now = time.time()
        beats = LeaseOwner.objects.using(self.alias).filter(queue=self.name)
        with self._db() as conn:
            last = beats.filter(cluster_id=owner).values_list("seen", flat=True).first()
            # One beater per owner: an update that finds no row cannot race a create.
            if not beats.filter(cluster_id=owner).update(seen=now):
                LeaseOwner.objects.using(self.alias).create(queue=self.name, cluster_id=owner, seen=now)
            # An owner whose leases are old but who never beat (paused or killed between its first
            # lease and its first beat) gets a row as never seen: silent like any other.
            old = self._old_leases(now, dead_after).exclude(owner__in=beats.values("cluster_id"))
            unbeaten = set(old.filter(owner__isnull=False).values_list("owner", flat=True).distinct())
            if unbeaten:
                LeaseOwner.objects.using(self.alias).bulk_create(
                    [LeaseOwner(queue=self.name, cluster_id=o, seen=0.0) for o in unbeaten], ignore_conflicts=True
                )
            silent = set(beats.filter(seen__lte=now - dead_after).values_list("cluster_id", flat=True))
            if silent:
                statuses = Heartbeat.objects.using(self.alias).filter(queue=self.name, expires__gt=now)
                dead = silent - set(statuses.filter(cluster_id__in=silent).values_list("cluster_id", flat=True))
                if dead:
                    self._release(conn, dead, now, dead_after)
        return last is None or last <= now - dead_after

    def held(self: _Host, ids: Sequence[str], owner: str) -> list[str]:
        """Those of `ids` still leased by `owner`."""
        if not ids:
            return []
        with self._db():
            found = self._leased_rows(ids).filter(owner=owner, visible__gt=time.time()).values_list("id", flat=True)
            mine = {str(pk) for pk in found}
        return [i for i in ids if i in mine]

    def _old_leases(self: _Host, now: float, dead_after: float) -> QuerySet:
        """The live leases taken or last renewed `dead_after` seconds ago or more (a lease ends `lease` seconds
        after that)."""
        return self._rows().filter(leased=True, visible__gt=now, visible__lte=now + self.lease - dead_after)

    def _release(self: _Host, conn: BaseDatabaseWrapper, dead: set[str], now: float, dead_after: float) -> None:
        """Make ready the live leases of the `dead` owners that are still silent, but those leased or renewed
        within `dead_after`; forget the owners left with none."""
        silent = LeaseOwner.objects.using(self.alias).filter(
            queue=self.name, cluster_id__in=dead, seen__lte=now - dead_after
        )
        old = self._old_leases(now, dead_after)
        release = {"leased": False, "visible": now, "running": None, "owner": None}
        if conn.vendor == "sqlite":
            released = old.filter(owner__in=silent.values("cluster_id")).update(**release)
        else:
            with transaction.atomic(using=self.alias):
                owners = list(silent.select_for_update().values_list("cluster_id", flat=True))
                released = old.filter(owner__in=owners).update(**release) if owners else 0
        if released:
            wakeup.notify(conn, self.name)
        live = self._rows().filter(leased=True, visible__gt=now, owner__in=dead)
        silent.exclude(cluster_id__in=set(live.values_list("owner", flat=True))).delete()
