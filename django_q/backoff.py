"""Riding out an outage: a growing pause between attempts, and a log line at its start and at its end.

Every loop of the cluster that calls a broker or a database keeps one
`Outage`. A failed attempt calls `failed()`, which logs only the outage's
first failure and returns the seconds to pause before the next attempt; an
attempt that goes through calls `recovered()`, which logs how long the outage
lasted. So a broker down for a minute costs each loop two log lines, not one
per attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class Outage:
    """The state of one retried call: since when it fails, and the pause before its next attempt.

    `failing` is logged at `level` on an outage's first failure, formatted
    with the arguments given to `failed()`; `back` (if any) is logged as a
    warning on recovery, formatted with the outage's duration in seconds.
    Pauses start at `first` seconds and double up to `most`.
    """

    def __init__(
        self,
        logger: logging.Logger,
        failing: str,
        back: str | None = None,
        *,
        first: float = 0.1,
        most: float = 5.0,
        level: int = logging.ERROR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.failing = failing
        self.back = back
        self.first = first
        self.most = most
        self.level = level
        self.clock = clock
        self.since: float | None = None  # clock time of the outage's first failure; None: no outage
        self.pause = first  # seconds, the pause after the latest failure
        self.retry_at = 0.0  # clock time before which `due()` says no

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, *args: Any, message: str | None = None, exc_info: bool = False) -> float:
        """Count a failed attempt and return the seconds to pause; log it if it begins an outage.

        `message` replaces `failing` for this failure (when it is the first);
        `exc_info` adds the traceback of the exception being handled.
        """
        now = self.clock()
        if self.since is None:
            self.since, self.pause = now, self.first
            self.logger.log(self.level, message or self.failing, *args, exc_info=exc_info)
        else:
            self.pause = min(self.pause * 2, self.most)
        self.retry_at = now + self.pause
        return self.pause

    def recovered(self) -> float | None:
        """An attempt went through: end the outage (logging `back`); its duration in seconds, None if none."""
        if self.since is None:
            return None
        lasted = self.clock() - self.since
        self.since, self.pause = None, self.first
        if self.back:
            self.logger.warning(self.back, lasted)
        return lasted

    def due(self) -> bool:
        """Whether to attempt now: no outage, or its latest pause is over (for callers that cannot sleep)."""
        return self.since is None or self.clock() >= self.retry_at
