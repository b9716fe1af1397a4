"""Packages that django-q 1.3 or django-q2 1.11 queued, taken into this project's queue.

Their package is a str made by Django's `signing.dumps` (key SECRET_KEY, salt
the cluster name, an optional zlib step) over a pickled task dict. Redis kept
it in the list `django_q:<cluster name>:q` (RPUSH, BLPOP); the database broker
in `django_q_ormq.payload`. Only packages whose signature holds are unpickled;
each becomes a TaskPackage of ours with the same id and name, so that
`result(id)` finds what it ran. Our own format (django_q.package) is not
widened: a legacy package is converted once, when it is taken in, and never
read by a worker as it is.

Taken in by migration 0005 (database rows, see django_q/migrations/_adopt.py)
and by `qcluster` at start (the Redis list, `take_redis_list`).
"""

from __future__ import annotations

import io
import logging
import pickle
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core import signing

from .enqueue import enqueue
from .exceptions import BadSignature, CorruptPackage, PackageError, TaskTypeError
from .models import DeadLetter
from .package import TaskPackage

logger = logging.getLogger("django_q")

# Keys of their task dict that become our package's fields (and enqueue's options) of the same name.
_SAME = ("hook", "group", "timeout", "save", "ack_failure", "cluster", "cached", "iter_cached")


class _Unpickler(pickle.Unpickler):
    """pickle's, except that pytz's UTC becomes datetime.timezone.utc where pytz is not installed.

    django-q 1.3 ran on Django 3.2, whose aware datetimes carry pytz's UTC: its
    packages' enqueue time does.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module == "pytz" and name == "_UTC":  # pytz.utc pickles as a call of pytz._UTC()
            try:
                return super().find_class(module, name)
            except ImportError:
                return lambda: UTC
        return super().find_class(module, name)


def legacy_names() -> tuple[str, ...]:
    """The names their packages were signed and queued under: Q_CLUSTER's `name`, then `cluster_name`."""
    conf = getattr(settings, "Q_CLUSTER", None) or {}
    name = conf.get("name", "default")
    return tuple(dict.fromkeys((name, conf.get("cluster_name") or name)))


def loads(payload: str | bytes, salts: Iterable[str]) -> dict[str, Any]:
    """The task dict of a django-q package, or BadSignature if it is not signed with our keys and one of `salts`.

    The signature is checked (SECRET_KEY and SECRET_KEY_FALLBACKS) before
    anything is unpickled. A body that does not unpickle to a task dict raises
    CorruptPackage.
    """
    try:
        text = bytes(payload).decode() if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    except UnicodeDecodeError:
        raise BadSignature("not a django-q package (not text)") from None
    for salt in salts:
        try:
            value = signing.TimestampSigner(salt=salt).unsign(text)
        except signing.BadSignature:
            continue
        break
    else:
        raise BadSignature("django-q package: signature does not match SECRET_KEY or SECRET_KEY_FALLBACKS")
    try:  # as signing.loads: a leading "." marks a zlib-compressed body
        data = signing.b64_decode(value.removeprefix(".").encode())
        task = _Unpickler(io.BytesIO(zlib.decompress(data) if value.startswith(".") else data)).load()
    except Exception as exc:  # the signature held: the body does not decompress or unpickle
        raise CorruptPackage(f"django-q package does not unpickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(task, dict) or not task.get("id") or not task.get("func"):
        raise CorruptPackage(f"django-q package holds {type(task).__name__}, not a task dict with id and func")
    return task


def package_of(task: dict[str, Any]) -> TaskPackage:
    """Our package for their task dict: same id, name, call, options (but `sync`) and chain.

    A part of their async_iter (iter_count, with the iter's id as its group)
    is one of ours: its result goes into the list saved under that id.
    """
    try:
        started = task.get("started")
        fields = {key: task[key] for key in _SAME if task.get(key) is not None}
        if task.get("iter_count"):
            fields["iter_count"], fields["parent"] = int(task["iter_count"]), str(task["group"])
        return TaskPackage(
            id=str(task["id"]),
            name=str(task.get("name") or task["id"])[:100],
            func=task["func"],
            args=tuple(task.get("args") or ()),
            kwargs=dict(task.get("kwargs") or {}),
            enqueued=started.timestamp() if isinstance(started, datetime) else 0.0,
            chain=tuple(_link(link) for link in task.get("chain") or ()),
            **fields,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptPackage(f"django-q task {task.get('id')!r} cannot be read: {type(exc).__name__}: {exc}") from exc


def _link(link: Any) -> tuple:
    """A chain link of theirs, (func,), (func, args) or (func, args, kwargs), as our (func, args, kwargs)."""
    link = tuple(link) if isinstance(link, (tuple, list)) else (link,)
    func, args, kwargs = (link + ((), {}))[:3]
    return (func, tuple(args or ()), dict(kwargs or {}))


def redis_list_keys() -> list[str]:
    """Where their Redis broker queued packages: `django_q:<cluster name>:q` (no hash tag)."""
    return [f"django_q:{name}:q" for name in legacy_names()]


def take_redis_list(client: Any, queue: str) -> tuple[int, int]:
    """Move the packages django-q left in Redis into our queue `queue`; (taken, dead-lettered).

    Each package is moved (LMOVE, so that two clusters starting at once never
    take the same one) to `<list>:taking` while it is converted and enqueued,
    then dropped from there: a cluster that dies in between leaves it in
    `:taking`, and the next start takes it (it may then run twice, never not at all).
    """
    taken = dead = 0
    salts = legacy_names()
    for key in redis_list_keys():
        taking = f"{key}:taking"
        while client.lmove(taking, key, "RIGHT", "LEFT") is not None:  # left by a cluster that died taking them
            pass
        while (raw := client.lmove(key, taking, "LEFT", "RIGHT")) is not None:
            try:
                _enqueue(package_of(loads(raw, salts)), queue)
            except (PackageError, TaskTypeError) as exc:  # a BrokerError stops qcluster: the package stays in :taking
                DeadLetter.objects.create(broker_id=key, queue=queue, payload=bytes(raw), reason=str(exc))
                logger.error("django-q package in Redis list %s dead-lettered: %s", key, exc)
                dead += 1
            else:
                taken += 1
            client.lrem(taking, 1, raw)
    if taken or dead:
        logger.info("took %d django-q package(s) from Redis into queue %s, %d dead-lettered", taken, queue, dead)
    return taken, dead


def _enqueue(package: TaskPackage, queue: str) -> None:
    options = {key: getattr(package, key) for key in _SAME if getattr(package, key) is not None}
    options["cluster"] = options.get("cluster") or queue
    if package.iter_count:
        options["iter_count"] = package.iter_count
    enqueue(
        package.func, [package.args], package.kwargs, options,
        ids=[package.id], names=[package.name], fields={"chain": package.chain} if package.chain else None,
        enqueued=package.enqueued or None,
    )
