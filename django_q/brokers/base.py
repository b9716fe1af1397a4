"""The broker contract: signed bytes in, leased deliveries out, then ack.

A broker knows nothing of tasks. It keeps opaque packages in a named queue
and hands them out under a lease:

- `dequeue` leases up to `count` ready packages for `lease` seconds and
  returns them as `Delivery` objects (an empty list when none came within
  `timeout`). Each delivery counts one more attempt.
- `renew` extends the lease of deliveries still being worked on.
- `ack` removes a delivery for good; it is called only after the task's
  result has been saved.
- `requeue` makes a delivery ready again at once, keeping its position and
  attempt count (a graceful stop hands back what it did not start).
- A delivery whose lease runs out (its cluster died) becomes ready again on
  its own and is handed out by the next `dequeue` of any cluster.

Acking, renewing or requeueing an id that is no longer leased is a no-op, so a
slow cluster whose lease was taken over cannot corrupt the queue.

Besides packages, a broker keeps one small status record per running cluster
of the queue (`publish_status`, `remove_status`, `statuses`; see
django_q.status): opaque bytes that expire unless published again.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

PRIORITY_MIN = -100
PRIORITY_MAX = 100


@dataclass(frozen=True, slots=True)
class Delivery:
    """A package handed out under a lease."""

    id: str  # the broker's receipt: pass it to ack, renew and requeue
    payload: bytes
    attempts: int  # deliveries of this package so far, this one included


class Broker(abc.ABC):
    """One named queue on some store. Subclasses are safe to use from one thread."""

    #: whether `dequeue` blocks on the server rather than polling
    blocking: bool = False

    def __init__(self, name: str, lease: float) -> None:
        self.name = name
        self.lease = lease

    @abc.abstractmethod
    def enqueue(self, payload: bytes, priority: int = 0, delay: float = 0.0) -> str:
        """Add a package; higher `priority` is handed out first; `delay` seconds hold it back."""

    def enqueue_many(self, payloads: Sequence[bytes], priority: int = 0) -> list[str]:
        """Add several packages in one round trip where the store allows it."""
        return [self.enqueue(p, priority) for p in payloads]

    @abc.abstractmethod
    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Delivery]:
        """Lease up to `count` ready packages, waiting up to `timeout` seconds for the first."""

    @abc.abstractmethod
    def renew(self, ids: Sequence[str]) -> None:
        """Extend the leases of `ids` to `lease` seconds from now."""

    @abc.abstractmethod
    def ack(self, ids: Sequence[str]) -> None:
        """Remove deliveries for good."""

    @abc.abstractmethod
    def requeue(self, ids: Sequence[str]) -> None:
        """Make leased deliveries ready again now, keeping their place and attempts."""

    @abc.abstractmethod
    def size(self) -> int:
        """Packages waiting to be handed out (leased and delayed ones excluded)."""

    @abc.abstractmethod
    def leased(self) -> int:
        """Packages handed out and not yet acked."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Return if the store answers; raise BrokerConnectionError otherwise."""

    @abc.abstractmethod
    def purge(self) -> None:
        """Remove every package of this queue, ready or leased."""

    def setup_warnings(self) -> list[str]:
        """Ways the store's own settings could lose tasks, told once when a cluster starts."""
        return []

    @abc.abstractmethod
    def publish_status(self, cluster_id: str, data: bytes, ttl: float) -> None:
        """Store (or replace) the status of cluster `cluster_id`; it expires `ttl` seconds from now."""

    @abc.abstractmethod
    def remove_status(self, cluster_id: str) -> None:
        """Remove the status of cluster `cluster_id` now (a graceful stop)."""

    @abc.abstractmethod
    def statuses(self) -> list[bytes]:
        """The statuses of this queue's clusters that have not expired, in no particular order."""

    def close(self) -> None:
        """Release connections."""
