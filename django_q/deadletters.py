"""Packages the cluster set aside: list them, purge them, or requeue those whose signature now holds."""

from __future__ import annotations

from django.db.models import QuerySet

from .brokers import get_broker
from .conf import get_config
from .exceptions import PackageError
from .models import DeadLetter
from .package import verify


def requeue(letters: QuerySet | None = None) -> tuple[int, int]:
    """Send back to their queues the dead letters that verify with the current keys.

    Returns (requeued, kept): a letter that still fails its check stays where it is.
    """
    config = get_config()
    requeued = kept = 0
    for letter in letters if letters is not None else DeadLetter.objects.all():
        payload = bytes(letter.payload)
        try:
            verify(payload, config.package_limit)
        except PackageError:
            kept += 1
            continue
        get_broker(letter.queue, config).enqueue(payload)
        letter.delete()
        requeued += 1
    return requeued, kept


def purge(letters: QuerySet | None = None) -> int:
    """Delete dead letters for good; returns how many."""
    return (letters if letters is not None else DeadLetter.objects.all()).delete()[0]
