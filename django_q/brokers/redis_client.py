"""Making the Redis broker's clients: from a URL, a dict of redis.Redis keywords (Sentinel too), or
django-redis's client for a cache, always returning bytes and with bounded connect and read times."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..exceptions import ConfigurationError

# What CLIENT SETINFO tells the server, made once per process. Without it
# redis-py makes its own for every new connection, reading its version from the
# installed package's metadata (a walk of sys.path and a parse of METADATA with
# the email package): four times as the pusher starts, on the way to the first
# task, and about 1 MiB of memory a forked process no longer shares.
try:
    from redis.driver_info import DriverInfo  # redis-py 7.1+
except ImportError:  # older releases read their version once, at import
    _DRIVER_INFO: DriverInfo | None = None
else:
    _DRIVER_INFO = DriverInfo(lib_version=redis.__version__)


def django_redis_client(alias: str) -> redis.Redis:
    """The client django-redis keeps for cache `alias` (Q_CLUSTER['django_redis']), shared with the cache."""
    try:
        from django_redis import get_redis_connection
    except ImportError:
        raise ConfigurationError(f"Q_CLUSTER['django_redis'] = {alias!r} needs the django-redis package") from None
    try:
        client = get_redis_connection(alias)
    except NotImplementedError:
        raise ConfigurationError(
            f"Q_CLUSTER['django_redis']: the cache {alias!r} is not a django-redis cache"
        ) from None
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ConfigurationError(
            f"Q_CLUSTER['django_redis']: the cache {alias!r} decodes responses; the broker needs bytes"
        )
    return client


_DRIVER_KEYS = {"driver_info", "lib_name", "lib_version"}  # a setting with any of them keeps its own


def make_client(setting: str | dict[str, Any] | redis.Redis, bound: float | None = None) -> redis.Redis:
    """A client of its own with bounded connect and read times, returning bytes (a given client as it is,
    unless `bound`: then one of its own to the same server).

    A dict with `sentinels` ([(host, port), ...]) and `service_name` connects
    through Redis Sentinel: the client asks the sentinels for the primary and
    asks again after a connection fails, so a failover is followed. With
    `bound` (seconds), no connect or read waits longer, whatever the setting
    says, and nothing is retried.
    """
    # Without a socket timeout a vanished server (not a refused connection)
    # would hang a consumer forever; the user's values win.
    defaults: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 30.0}
    if _DRIVER_INFO is not None and not (isinstance(setting, dict) and setting.keys() & _DRIVER_KEYS):
        defaults["driver_info"] = _DRIVER_INFO
    if isinstance(setting, redis.Redis):  # django-redis's, shared with the cache: left as it is
        if bound is None:
            return setting
        pool = setting.connection_pool
        client = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs)
        )
        client.auto_close_connection_pool = True  # this pool is ours: close() ends it
    elif isinstance(setting, str):
        client = redis.Redis.from_url(setting, **defaults)
    elif "sentinels" in setting:
        options = {**defaults, **setting}
        sentinels = [tuple(s) for s in options.pop("sentinels")]
        service = options.pop("service_name", "mymaster")
        sentinel_kwargs = options.pop("sentinel_kwargs", None) or {
            "socket_connect_timeout": options["socket_connect_timeout"],
            "socket_timeout": options["socket_connect_timeout"],
        }
        client = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs).master_for(service, **options)
    else:
        client = redis.Redis(**{**defaults, **setting})
    # Payloads are bytes: a client that decodes replies would corrupt them.
    kwargs = client.connection_pool.connection_kwargs
    kwargs["decode_responses"] = False
    if bound is not None:
        connect = min(kwargs.get("socket_connect_timeout") or bound, bound)
        # orig_*: what redis-py puts back after its maintenance notices relaxed a timeout.
        for key, value in (("socket_timeout", bound), ("socket_connect_timeout", connect)):
            kwargs[key] = value
            if f"orig_{key}" in kwargs:
                kwargs[f"orig_{key}"] = value
        kwargs["retry"] = Retry(NoBackoff(), 0)
        client.set_retry(Retry(NoBackoff(), 0))
    return client
