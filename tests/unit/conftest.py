"""Fixtures of the unit tests: no server is needed, only the SQLite test database."""

from collections.abc import Callable, Iterator

import pytest

from django_q.brokers import close_brokers

from .helpers import UNREACHABLE_REDIS


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
