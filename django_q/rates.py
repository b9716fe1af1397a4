"""Rate limits (Q_CLUSTER['rate_limits']): their syntax, the keys a task counts against, and the sliding log.

A limit is "N/s", "N/m" or "N/h": no more than N starts in any window of
that period, across every cluster of the queue. Its key is a function's
dotted path ("app.tasks.send_mail"), or "group:<name>" for every task of a
group; a task that both keys match must have room under both.

The brokers keep, per key, a sliding log of the last N start times (`take`
here for the memory and database brokers, a Lua script on Redis): a start is
taken when fewer than N starts are in the log's window, else its wait is
the time until the oldest of the last N leaves the window.

The window is the period plus MARGIN of it (at most MAX_MARGIN seconds):
starts are taken when the fetcher leases a task, a few milliseconds before a
worker runs it, and two such delays of different lengths must not bring two
starts closer together than the limit allows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigurationError

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
GROUP = "group:"
MARGIN = 0.1  # of the period
MAX_MARGIN = 1.0  # seconds
_SYNTAX = re.compile(r"\s*([1-9][0-9]*)\s*/\s*([smh])\s*")


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` starts in any `period` seconds; `text` is how the setting wrote it."""

    count: int
    period: float
    text: str

    @property
    def window(self) -> float:
        """Seconds each start is counted for: the period and its margin."""
        return self.period + min(self.period * MARGIN, MAX_MARGIN)

    def __str__(self) -> str:
        return self.text


def parse_limits(value: Any, label: str = "Q_CLUSTER['rate_limits']") -> dict[str, Limit]:
    """The limits of a rate_limits setting; ConfigurationError naming the key and value that are wrong."""
    if not isinstance(value, dict):
        raise ConfigurationError(f"{label} must be a dict of {{function path or 'group:<name>': 'N/s'}}, got {value!r}")
    return {_checked_key(key, label): parse_limit(value[key], f"{label}[{key!r}]") for key in value}


def parse_limit(value: Any, label: str) -> Limit:
    """A Limit from "N/s", "N/m" or "N/h" with N a positive whole number."""
    found = _SYNTAX.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigurationError(f"{label} must be 'N/s', 'N/m' or 'N/h' with N a positive whole number, got {value!r}")
    return Limit(int(found[1]), PERIODS[found[2]], value.strip())


def _checked_key(key: Any, label: str) -> str:
    if isinstance(key, str) and key.startswith(GROUP) and key[len(GROUP):]:
        return key
    if isinstance(key, str) and len(parts := key.split(".")) > 1 and all(p.isidentifier() for p in parts):
        return key
    raise ConfigurationError(f"{label}: the key {key!r} must be a function's dotted path or 'group:<name>'")


def keys_of(func_name: str, group: str | None, limits: Mapping[str, Limit]) -> tuple[str, ...]:
    """The keys of `limits` a task of `func_name` in `group` counts against."""
    keys = (func_name, f"{GROUP}{group}") if group is not None else (func_name,)
    return tuple(key for key in keys if key in limits)


def take(
    logs: dict[str, list[float]], wanted: Sequence[Sequence[str]], limits: Mapping[str, Limit], now: float
) -> list[float]:
    """Take starts in order from the sliding logs (key -> start times, oldest first), changing them in place.

    Each item of `wanted` is the keys one start counts against. Its answer is
    0.0 when the start was taken (and logged under every key), else the
    seconds until each of its full keys has room again.
    """
    for key in {key for keys in wanted for key in keys}:
        cut = now - limits[key].window
        logs[key] = [t for t in logs.get(key, ()) if t > cut]
    waits = []
    for keys in wanted:
        full = [key for key in keys if len(logs[key]) >= limits[key].count]
        if full:
            waits.append(max(logs[key][-limits[key].count] + limits[key].window - now for key in full))
            continue
        for key in keys:
            logs[key].append(now)
        waits.append(0.0)
    for key in logs:
        if key in limits:
            del logs[key][: -limits[key].count]
    return waits
