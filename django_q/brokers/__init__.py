"""The one place that picks a broker: Q_CLUSTER['redis'] or ['django_redis'] selects Redis, else the database."""

from __future__ import annotations

import os
import threading

from ..conf import Config, get_config
from .base import Broker, Delivery, QueueBackend, Tracking
from .queues import Queues

__all__ = ["Broker", "Delivery", "QueueBackend", "Tracking", "close_brokers", "cluster_broker", "get_broker"]

_local = threading.local()


def get_broker(name: str | None = None, config: Config | None = None) -> QueueBackend:
    """The broker of queue `name` (the cluster name by default), one per thread and process."""
    config = config or get_config()
    name = name or config.name
    cache = _cache()
    cached = cache.get(name)
    if cached is not None and cached[0] is config:
        return cached[1]
    if cached is not None:
        cached[1].close()  # built for settings that have changed since
    broker = _create(name, config)
    cache[name] = (config, broker)
    return broker


def cluster_broker(config: Config) -> QueueBackend:
    """What a cluster dequeues from: its one queue's broker, or a `Queues` over its queues, in order."""
    names = config.served_queues
    if len(names) == 1:
        return get_broker(names[0], config)
    return Queues([get_broker(name, config) for name in names])


def _create(name: str, config: Config) -> QueueBackend:
    # Each broker's module is imported only when it is used: redis-py is needed by
    # the Redis broker alone, and the database broker's module imports the models,
    # which need the app registry, while this module is imported before it is ready.
    if config.django_redis is not None:
        from .redis import RedisBroker
        from .redis_client import django_redis_client

        return RedisBroker(name, config.retry, django_redis_client(config.django_redis), config.enqueue_timeout)
    if config.redis is not None:  # (broker_kind "redis" with the django_redis client handled above)
        from .redis import RedisBroker

        return RedisBroker(name, config.retry, config.redis, config.enqueue_timeout)
    from .orm import OrmBroker

    return OrmBroker(name, config.retry, alias=config.orm_alias, poll=config.poll)


def _cache() -> dict:
    cache = getattr(_local, "brokers", None)
    if cache is None or _local.pid != os.getpid():
        cache = _local.brokers = {}
        _local.pid = os.getpid()
    return cache


def close_brokers() -> None:
    """Close and forget this thread's brokers (settings changed, or a process is ending)."""
    for _, broker in _cache().values():
        broker.close()
    _local.brokers = {}
