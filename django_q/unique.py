"""The keys of unique tasks (`async_task(..., unique=...)`): a stable digest per task, the same in every process.

The broker holds a key while the package that took it is in the queue (see
`Broker.enqueue_unique`); this module only names the keys. A key is the
SHA-256 hex digest of either the key the caller gave (`unique="some key"`) or,
with `unique=True`, the function's dotted path with the task's arguments.

The arguments are digested from a canonical form, not from their pickle: a
pickle of the same value can differ between processes (a set of strings
iterates in an order set by each process's hash seed) and between Python
versions. The canonical form covers None, bools, numbers, strings, bytes,
lists, tuples, dicts, sets, dates and times, Decimal, UUID and model
instances (by model and primary key); dict keys and set items are sorted by
their canonical text, so their order never matters. An argument of any other
type has no stable form: TaskTypeError asks for an explicit key.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import models

from .exceptions import TaskTypeError


def unique_keys(
    unique: Any, func: Any, args: Sequence[tuple], kwargs: Mapping[str, Any], grouped: bool = False
) -> list[str] | None:
    """The unique key of each task of a call (one per tuple of `args`), or None when `unique` is off.

    `func` is what the package carries (a dotted path, or a pickled callable).
    `grouped`: the tasks are parts of one iter, which a key could leave incomplete.
    """
    if unique is None or unique is False:
        return None
    if grouped:
        raise TaskTypeError("unique does not apply to the parts of an iter: a part held back would never come")
    if unique is True:
        if not isinstance(func, str):
            raise TaskTypeError(
                "unique=True needs a function named by its dotted path; give this callable a key: unique='...'"
            )
        return [_digest(["call", func, canonical(tuple(a)), canonical(dict(kwargs))]) for a in args]
    if isinstance(unique, str) and unique:
        if len(args) != 1:
            raise TaskTypeError(
                f"unique={unique!r} names one task, and this call makes {len(args)}; "
                "unique=True gives each its own key from its arguments"
            )
        return [_digest(["key", unique])]
    raise TaskTypeError(f"unique must be True, False or a non-empty string key, got {unique!r}")


def _digest(form: list) -> str:
    text = json.dumps(form, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def canonical(value: Any) -> Any:
    """`value` as JSON-ready lists and scalars, equal for equal values in every process; TaskTypeError if none."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return ["int", str(int(value))]  # str: JSON readers may round big integers
    if isinstance(value, float):
        return ["float", repr(float(value))]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, tuple):
        return ["tuple", [canonical(v) for v in value]]
    if isinstance(value, list):
        return ["list", [canonical(v) for v in value]]
    if isinstance(value, Mapping):
        items = [[canonical(k), canonical(v)] for k, v in value.items()]
        return ["dict", sorted(items, key=_text)]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted((canonical(v) for v in value), key=_text)]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return [type(value).__name__, value.isoformat()]
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return [type(value).__name__, str(value)]
    if isinstance(value, models.Model) and value.pk is not None:
        return ["model", value._meta.label, canonical(value.pk)]
    raise TaskTypeError(
        f"unique=True cannot make a stable key of an argument of type {type(value).__name__}; "
        "give the task a key of your own: unique='...'"
    )


def _text(form: Any) -> str:
    return json.dumps(form, separators=(",", ":"), ensure_ascii=False)
