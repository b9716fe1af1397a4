"""Results kept in Django's cache instead of the database: django-q2's `cached` option.

The cache is `CACHES[Q_CLUSTER["cache"]]` ("default" unless set); a result is
kept `cached` seconds, or with `cached=True` until the cache evicts it. Keys,
as django-q2 lays them out (the queue is the cluster name the task ran on):

    "{queue}:{task id}"      the Task's fields, a dict (the cache pickles it)
    "{queue}:{group}:keys"   the task keys of a group, in the order they were stored

Only the saver (or sync mode) writes; a group's key list is read, extended
and written back, so two clusters storing tasks of one group at the same
moment can lose one of the keys (as in django-q2).
"""

from __future__ import annotations

from typing import Any

from django.core.cache import BaseCache, caches

from .conf import Config


def cache_of(config: Config) -> BaseCache:
    return caches[config.cache]


def task_key(queue: str, task_id: str) -> str:
    return f"{queue}:{task_id}"


def group_key(queue: str, group: str) -> str:
    return f"{queue}:{group}:keys"


def timeout_of(cached: bool | int) -> int | None:
    """Seconds the cache keeps a result: None (until evicted) for True."""
    return None if cached is True else int(cached)


def store(config: Config, queue: str, fields: dict[str, Any], cached: bool | int) -> bool:
    """Keep a finished task's fields under its id (and in its group's list); False if a success is kept already.

    A success is never replaced, as in the database: a failure delivered
    again after the task succeeded leaves the success in place.
    """
    cache, key, timeout = cache_of(config), task_key(queue, fields["id"]), timeout_of(cached)
    kept = cache.get(key)
    if kept is not None and kept.get("success"):
        return False
    cache.set(key, fields, timeout)
    group = fields.get("group")
    if group and kept is None:
        keys = cache.get(group_key(queue, group)) or []
        cache.set(group_key(queue, group), [*keys, key], timeout)
    return True


def load(config: Config, queue: str, task_id: str) -> dict[str, Any] | None:
    """The fields of a cached task, or None."""
    return cache_of(config).get(task_key(queue, task_id))


def load_group(config: Config, queue: str, group: str) -> list[dict[str, Any]] | None:
    """The fields of a group's cached tasks in the order they were stored, or None if the group has none."""
    cache = cache_of(config)
    keys = cache.get(group_key(queue, group))
    if not keys:
        return None
    found = cache.get_many(keys)
    return [found[k] for k in keys if k in found]


def delete(config: Config, queue: str, task_id: str) -> bool:
    """Forget a cached task; whether it was there."""
    return bool(cache_of(config).delete(task_key(queue, task_id)))


def delete_group(config: Config, queue: str, group: str) -> None:
    """Forget a group's cached tasks and its list."""
    cache = cache_of(config)
    keys = cache.get(group_key(queue, group)) or []
    cache.delete_many([*keys, group_key(queue, group)])
