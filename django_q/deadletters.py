"""Packages the cluster set aside: keep them within bounds, purge them, or requeue those whose signature now holds.

The store is bounded two ways, so that a flood of bad packages cannot fill
the database: a letter keeps its payload only up to package_limit (a bigger
one keeps the package's header, its size and the reason), and at most
dead_letter_limit letters are kept, the oldest dropped first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db.models import QuerySet

from .brokers import get_broker
from .brokers.queues import split_id
from .conf import Config, get_config
from .exceptions import BrokerError, PackageError
from .models import DeadLetter
from .outcomes import DeadLetterNote
from .package import HEADER_BYTES, verify

logger = logging.getLogger("django_q")


def note(delivery_id: str, queue: str, payload: bytes, reason: str, limit: int) -> DeadLetterNote:
    """A package to set aside: whole up to `limit` bytes, else only its header, with its size and why."""
    size = len(payload)
    if size > limit:
        payload = payload[:HEADER_BYTES]
        reason = f"{reason}; only the first {len(payload)} of {size} bytes kept (over package_limit {limit})"
    return DeadLetterNote(delivery_id, queue, payload, reason, size)


def store(notes: Sequence[DeadLetterNote], config: Config, using: str) -> None:
    """Save `notes` as dead letters on the database `using`, then drop the oldest past dead_letter_limit."""
    letters = []
    for given in notes:
        size = len(given.payload) if given.size is None else given.size
        kept = note(given.delivery_id, given.queue, given.payload, given.reason, config.package_limit)
        # The id within its queue: a cluster serving several queues names the queue in its delivery ids.
        letters.append(DeadLetter(broker_id=split_id(kept.delivery_id)[1], queue=kept.queue, payload=kept.payload,
                                  reason=kept.reason, size=size))
    rows = DeadLetter.objects.using(using)
    rows.bulk_create(letters)
    excess = rows.count() - config.dead_letter_limit
    if excess > 0:
        oldest = list(rows.order_by("created", "id").values_list("id", flat=True)[:excess])
        rows.filter(id__in=oldest).delete()
        logger.warning("dropped the %d oldest dead letter(s): more than dead_letter_limit %d are kept",
                       len(oldest), config.dead_letter_limit)


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
