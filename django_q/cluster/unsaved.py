"""What ran and waits to be saved: the pusher's record of results handed to the saver (cluster.saving).

Every pass of the pusher's loop hands the saver what came since, as objects
(the saver lingers to make batches itself). At most WINDOW are handed over
and not yet saved: what the saver saves in one batch, and all that a
cluster found silent must wait on before it can drop a result (see
Saving.disown); the rest is handed over as `Saved` answers come back. A
delivery leaves only when the saver says it is saved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .messages import DeadLetterNote, Outcome, Saved

WINDOW = 500  # results handed to the saver and not yet saved, at most


class Unsaved:
    """Deliveries that ran and wait for the saver to save them, by delivery id."""

    def __init__(self) -> None:
        self.messages: dict[str, Outcome | DeadLetterNote] = {}
        self.unsent: deque[str] = deque()  # in arrival order
        self.sent: set[str] = set()

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, msg: Outcome | DeadLetterNote) -> None:
        """Keep `msg` until it is saved; it goes with the next hand-over."""
        self.messages[msg.delivery_id] = msg
        self.unsent.append(msg.delivery_id)

    def send(self, hand: Callable[[list[Outcome | DeadLetterNote]], None]) -> None:
        """Give `hand` what waits, as much as the window allows."""
        if not self.unsent:
            return
        batch: list[Outcome | DeadLetterNote] = []
        while self.unsent and len(self.sent) + len(batch) < WINDOW:
            delivery_id = self.unsent.popleft()
            msg = self.messages.get(delivery_id)
            if msg is None or delivery_id in self.sent:
                continue
            batch.append(msg)
        if batch:
            hand(batch)
            self.sent.update(m.delivery_id for m in batch)

    def settle(self, saved: Saved) -> list[str]:
        """The saver saved (or released) these: forget them. Returns the ids settled."""
        ids = [*saved.ack_ids, *saved.release_ids]
        for delivery_id in ids:
            self.messages.pop(delivery_id, None)
            self.sent.discard(delivery_id)
        return ids
