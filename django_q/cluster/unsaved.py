"""What ran and waits for the monitor to save it: the pusher's side of the conversation with the monitor.

Outcomes go to the monitor in batches: when MONITOR_BATCH wait, or when the
oldest has waited MONITOR_LINGER seconds (the monitor lingers longer itself).
At most MONITOR_WINDOW are sent and not yet saved, so that a send never
blocks on a full socket; the rest goes out as `Saved` answers come back. A
delivery leaves only when the monitor says it is saved; a new monitor is sent
everything still here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection

from .messages import DeadLetterNote, Outcome, Saved, send_many

MONITOR_WINDOW = 500  # outcomes sent to the monitor and not yet saved, at most
MONITOR_BATCH = 64
MONITOR_LINGER = 0.005  # seconds


class Unsaved:
    """Deliveries that ran and wait for the monitor to save them, by delivery id."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.messages: dict[str, Outcome | DeadLetterNote] = {}
        self.unsent: deque[str] = deque()  # in arrival order
        self.sent: set[str] = set()
        self.unsent_since: float | None = None  # clock time the oldest unsent message came

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, msg: Outcome | DeadLetterNote) -> None:
        """Keep `msg` until it is saved; it goes with the next batch."""
        self.messages[msg.delivery_id] = msg
        self.unsent.append(msg.delivery_id)

    def resend_all(self) -> None:
        """A new monitor: it gets everything not yet saved."""
        self.sent.clear()
        self.unsent = deque(self.messages)

    def linger(self) -> float | None:
        """Seconds until the unsent messages are due to go, None if none wait."""
        if self.unsent_since is None:
            return None
        return max(0.0, self.unsent_since + MONITOR_LINGER - self.clock())

    def send(self, monitor: Connection | None, now: bool = False) -> bool:
        """Send `monitor` what is due, in one message (everything unsent when `now`); False if the send failed."""
        if not self.unsent:
            return True
        if not (now or len(self.unsent) >= MONITOR_BATCH):
            if self.unsent_since is None:
                self.unsent_since = self.clock()
            if self.clock() - self.unsent_since < MONITOR_LINGER:
                return True
        self.unsent_since = None
        if monitor is None:
            return True
        batch: list[Outcome | DeadLetterNote] = []
        while self.unsent and len(self.sent) + len(batch) < MONITOR_WINDOW:
            delivery_id = self.unsent.popleft()
            msg = self.messages.get(delivery_id)
            if msg is None or delivery_id in self.sent:
                continue
            batch.append(msg)
        if not batch:
            return True
        try:
            send_many(monitor, batch)
        except OSError:
            self.unsent.extendleft(reversed([m.delivery_id for m in batch]))
            return False
        self.sent.update(m.delivery_id for m in batch)
        return True

    def settle(self, saved: Saved) -> list[str]:
        """The monitor saved (or released) these: forget them. Returns the ids settled."""
        ids = [*saved.ack_ids, *saved.release_ids]
        for delivery_id in ids:
            self.messages.pop(delivery_id, None)
            self.sent.discard(delivery_id)
        return ids
