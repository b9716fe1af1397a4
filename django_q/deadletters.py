"""Packages the cluster set aside: list them, purge them, or requeue those whose signature now holds."""

from __future__ import annotations

from django.db.models import QuerySet

from .brokers import get_broker
from .conf import get_config
from .exceptions import BrokerError, PackageError
from .models import DeadLetter
from .package import verify


def requeue(letters: QuerySet | None = None) -> tuple[int, list[tuple[DeadLetter, str]]]:
    """Send back to their queues the dead letters that verify with the current keys.

    Returns how many went back, and each letter kept with the reason: a
    package the keys do not vouch for never reaches a worker.
    """
    config = get_config()
    requeued = 0
    kept: list[tuple[DeadLetter, str]] = []
    for letter in letters if letters is not None else DeadLetter.objects.all():
        payload = bytes(letter.payload)
        try:
            verify(payload, config.package_limit)
            get_broker(letter.queue, config).enqueue(payload)
        except (PackageError, BrokerError) as exc:
            kept.append((letter, str(exc)))
            continue
        letter.delete()
        requeued += 1
    return requeued, kept


def purge(letters: QuerySet | None = None) -> int:
    """Delete dead letters for good; returns how many."""
    return (letters if letters is not None else DeadLetter.objects.all()).delete()[0]
