"""Helpers shared by the unit tests."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.dispatch import Signal

# Nothing listens on port 1: a connection is refused at once. A test that
# configures this broker and gets a TaskTypeError (not a broker error) proves
# the argument check ran before any broker was touched.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@contextmanager
def received(signal: Signal) -> Iterator[list[dict]]:
    """Collect the keyword arguments of every send of `signal` inside the block."""
    calls: list[dict] = []

    def receiver(sender, **kwargs):
        calls.append({"sender": sender, **kwargs})

    signal.connect(receiver, weak=False)
    try:
        yield calls
    finally:
        signal.disconnect(receiver)
