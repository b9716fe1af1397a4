"""Fixtures of the unit tests: no server is needed, only the SQLite test database."""

import sys
from collections.abc import Callable, Iterator

import pytest

from django_q import reporters
from django_q.brokers import close_brokers

from .helpers import REPORTER_DIST, UNREACHABLE_REDIS


@pytest.fixture
def q_cluster(settings) -> Callable[..., None]:
    """Set Q_CLUSTER to exactly the given keys (undone after the test, like override_settings)."""

    def configure(**options) -> None:
        settings.Q_CLUSTER = options

    return configure


@pytest.fixture
def unreachable_redis(q_cluster) -> Iterator[None]:
    """Configure a Redis broker that refuses connections."""
    close_brokers()
    q_cluster(redis=UNREACHABLE_REDIS)
    yield
    close_brokers()


@pytest.fixture
def plugin_installed(monkeypatch) -> Iterator[None]:
    """The test error reporter plugin (tests/reporter_dist) on sys.path, as `pip install` would put it."""
    monkeypatch.syspath_prepend(REPORTER_DIST)
    monkeypatch.setattr(reporters, "_made", None)
    yield
    monkeypatch.delitem(sys.modules, "dq_test_reporter", raising=False)
