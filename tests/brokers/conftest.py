"""Broker fixtures: every contract test runs on Redis (our own client, and django-redis's), the database
broker (SQLite, PostgreSQL, MariaDB) and in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.db.utils import load_backend
from django.test import override_settings

from django_q.brokers.base import QueueBackend
from django_q.brokers.memory import MemoryBroker
from django_q.brokers.orm import OrmBroker
from django_q.brokers.redis import RedisBroker
from django_q.brokers.redis_client import django_redis_client

ALIASES = {"sqlite": "default", "pg": "pg", "mysql": "mysql"}


def _db(alias: str) -> pytest.MarkDecorator:
    # transaction=True: brokers commit, and other threads must see their rows.
    return pytest.mark.django_db(databases=[alias], transaction=True)


BACKENDS = [
    pytest.param("redis", id="redis"),
    # Q_CLUSTER['django_redis']: the connection django-redis keeps for the test settings' "djredis" cache
    pytest.param("django_redis", id="django_redis"),
    pytest.param("sqlite", id="sqlite", marks=_db("default")),
    pytest.param("pg", id="pg", marks=_db("pg")),
    pytest.param("mysql", id="mysql", marks=_db("mysql")),
    pytest.param("memory", id="memory"),
]

MakeBroker = Callable[..., QueueBackend]
T = TypeVar("T")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the store under test: redis, sqlite, pg, mysql or memory."""
    return request.param


@pytest.fixture
def make_broker(backend: str, queue_name: str, redis_url: str) -> Iterator[MakeBroker]:
    """A factory of brokers on the store under test; everything they queued is purged afterwards."""
    made: list[QueueBackend] = []

    def make(lease: float = 30.0, name: str | None = None) -> QueueBackend:
        broker: QueueBackend
        if backend == "redis":
            broker = RedisBroker(name or queue_name, lease, redis_url)
        elif backend == "django_redis":
            broker = RedisBroker(name or queue_name, lease, django_redis_client("djredis"))
        elif backend == "memory":
            broker = MemoryBroker(name or queue_name, lease)
        else:
            broker = OrmBroker(name or queue_name, lease, alias=ALIASES[backend], poll=0.02)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.purge()
        broker.close()


@pytest.fixture
def broker(make_broker: MakeBroker) -> QueueBackend:
    """A broker on the store under test with a 30 s lease."""
    return make_broker()


@contextmanager
def dead_alias(alias: str) -> Iterator[str]:
    """A database alias configured like `alias` but pointing at nothing that answers.

    The connection is set for this thread only and kept out of the settings,
    so Django's test case treats it as a dynamic connection and allows it.
    """
    dead = f"dead_{alias}"
    settings = dict(connections.settings[alias])
    if settings["ENGINE"].endswith("sqlite3"):
        settings["NAME"] = "/nonexistent/directory/db.sqlite3"
    else:
        settings["PORT"] = "1"
    wrapper = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, dead)
    setattr(connections._connections, dead, wrapper)
    try:
        yield dead
    finally:
        wrapper.close()
        delattr(connections._connections, dead)


@pytest.fixture
def dead_broker(backend: str, queue_name: str) -> Iterator[QueueBackend]:
    """A broker of the kind under test whose server does not answer."""
    if backend == "memory":
        pytest.skip("the memory broker has no server to lose")
    if backend == "redis":
        broker = RedisBroker(queue_name, 5.0, "redis://127.0.0.1:1/0")
        yield broker
        broker.close()
        return
    if backend == "django_redis":
        dead = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
        with override_settings(CACHES={**django_settings.CACHES, "dead": dead}):
            broker = RedisBroker(queue_name, 5.0, django_redis_client("dead"))
            yield broker
            broker.close()
        return
    with dead_alias(ALIASES[backend]) as alias:
        yield OrmBroker(queue_name, 5.0, alias=alias, poll=0.02)


def in_thread(func: Callable[..., T], *args: Any) -> T:
    """Run `func` in a worker thread and close the database connections it opened there."""
    try:
        return func(*args)
    finally:
        connections.close_all()
