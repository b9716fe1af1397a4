"""Helpers shared by the unit tests."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.dispatch import Signal

# Nothing listens on port 1: a connection is refused at once. A test that
# configures this broker and gets a TaskTypeError (not a broker error) proves
# the argument check ran before any broker was touched.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

# A distribution whose dist-info registers test error reporters in djangoq.errorreporters.
REPORTER_DIST = str(Path(__file__).resolve().parents[1] / "reporter_dist")


def reports(path: Path) -> list[dict]:
    """The reports the test plugin's `filelog` reporter wrote to `path`, oldest first."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


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
