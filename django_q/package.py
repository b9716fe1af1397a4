"""The package format: what a task looks like on the broker.

A package is bytes laid out as

    b"DQ" | version (1 byte) | flags (1 byte) | HMAC-SHA256 (32 bytes) | body

The HMAC is Django's `salted_hmac` over flags and body with SECRET_KEY; a
package signed with any of SECRET_KEY_FALLBACKS is accepted too. The
signature is checked before the body is decompressed or deserialized, so a
package from anyone without the key is never unpickled. The cluster name is
not part of the signature: any cluster holding the key reads any queue.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import operator
import pickle
import zlib
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from django.conf import settings
from django.utils.encoding import force_bytes

from .exceptions import BadSignature, CorruptPackage, PackageTooLarge
from .funcs import callable_path

MAGIC = b"DQ\x01"
FLAG_ZLIB = 0x01
FLAG_JSON = 0x02
SIG_BYTES = 32
HEADER_BYTES = len(MAGIC) + 1 + SIG_BYTES
SALT = "django_q.package"


@dataclass(frozen=True, slots=True)
class TaskPackage:
    """One task as enqueued: what the worker needs to run it and the saver to record it."""

    id: str
    name: str
    func: Any  # a dotted path, or (pickle only) a picklable callable object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    hook: str | None = None
    group: str | None = None
    timeout: float | None = None
    save: bool | None = None
    ack_failure: bool | None = None
    cluster: str | None = None
    enqueued: float = 0.0  # epoch seconds
    chain: tuple = ()  # the (func, args, kwargs) still to run after this task
    parent: str | None = None  # async_iter: the id the list of results is saved under
    iter_count: int = 0  # async_iter: how many parts the parent has
    priority: int = 0  # -100..100, higher first (the broker orders by it; kept here for display)
    # Retry policy: a run that raises one of `retry_on` (dotted exception class
    # paths; empty: any Exception) is run again while attempts <= retries, after
    # retry_delay * retry_backoff ** (attempt - 1) seconds.
    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    retry_on: tuple = ()
    history: tuple = ()  # earlier failed attempts: dicts of worker, exception, traceback, stopped
    django: dict | None = None  # a django.tasks task: backend alias, queue name, takes_context
    # django-q2's `cached`: the result goes to Django's cache (True: until evicted;
    # seconds) instead of the database; `iter_cached` does that for an iter's list.
    cached: bool | int = False
    iter_cached: bool | int = False

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from their defaults (from_dict fills in the rest): smaller packages."""
        return {
            name: value
            for (name, default), value in zip(_DEFAULTS, _values(self))
            if default is _REQUIRED or value != default
        }

    def __reduce__(self) -> tuple:
        # Between cluster processes (inside an Outcome): a tuple of values is
        # several times cheaper to unpickle than the dataclass's own state.
        return (_rebuild, _values(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskPackage:
        """The package of a to_dict() (a package's body): unknown keys ignored, a required one missing a TypeError.

        The fields given go into a copy of the defaults, which _rebuild sets
        through the slots: about half of what the frozen __init__ costs, on the
        way of every task a worker runs.
        """
        missing = [name for name in _REQUIRED_NAMES if name not in data]
        if missing:
            raise TypeError(f"a package needs {', '.join(missing)}")
        values = _BLANK.copy()
        for place, factory in _FACTORIES:
            values[place] = factory()  # a default of its own (kwargs: a dict)
        for name, value in data.items():
            given = _PLACES.get(name)
            if given is not None:
                values[given] = value
        for place in _TUPLES:  # lists, from JSON
            values[place] = tuple(values[place] or ())
        values[_CHAIN] = tuple(tuple(link) for link in values[_CHAIN] or ())
        return _rebuild(*values)

    @property
    def func_name(self) -> str:
        """The dotted path of the function, for display and the Task row."""
        if isinstance(self.func, str):
            return self.func
        return callable_path(self.func)


_FIELDS = tuple(f.name for f in fields(TaskPackage))
_values = operator.attrgetter(*_FIELDS)  # every field's value, in order, in one call
_REQUIRED = object()
# Each field's slot setter, in order. A frozen dataclass's __init__ sets each field through
# object.__setattr__, about twice what the slot's own setter costs: the pusher unpickles
# every task's package inside its Outcome.
_SETTERS = tuple(TaskPackage.__dict__[name].__set__ for name in _FIELDS)


def _rebuild(*values: Any) -> TaskPackage:
    """The TaskPackage whose fields are `values`, in field order (what __reduce__ gives), without __init__."""
    task = object.__new__(TaskPackage)
    for set_field, value in zip(_SETTERS, values, strict=True):
        set_field(task, value)
    return task
_DEFAULTS = tuple(
    (f.name, f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING
     else _REQUIRED)
    for f in fields(TaskPackage)
)
_REQUIRED_NAMES = tuple(name for name, default in _DEFAULTS if default is _REQUIRED)
_BLANK: list[Any] = [None if default is _REQUIRED else default for _, default in _DEFAULTS]  # from_dict's start
_PLACES = {name: place for place, name in enumerate(_FIELDS)}
_FACTORIES = tuple(
    (_PLACES[f.name], f.default_factory) for f in fields(TaskPackage) if f.default_factory is not MISSING
)
_TUPLES = tuple(_PLACES[name] for name in ("args", "retry_on", "history"))
_CHAIN = _PLACES["chain"]


# An HMAC per key (SECRET_KEY first, then its fallbacks) over nothing yet: each
# package's MAC starts from a copy, so the key's padding is hashed once.
_hmacs: list[Any] | None = None


def _keyed() -> list[Any]:
    """The HMACs of SECRET_KEY and its fallbacks, keyed once as salted_hmac derives their keys."""
    global _hmacs
    if _hmacs is None:
        secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        keys = [hashlib.sha256(force_bytes(SALT) + force_bytes(secret)).digest() for secret in secrets]
        # hmac.HMAC wraps OpenSSL's HMAC (its `_hmac`) in Python methods: copying and
        # feeding the inner object, which has the same copy/update/digest, saves about
        # a third of a package's signing. Without one (no OpenSSL), the wrapper it is.
        _hmacs = [_inner(hmac.new(key, digestmod=hashlib.sha256)) for key in keys]
    return _hmacs


def _inner(mac: hmac.HMAC) -> Any:
    inner = getattr(mac, "_hmac", None)
    return inner if inner is not None and all(hasattr(inner, m) for m in ("copy", "update", "digest")) else mac


def reset_keys() -> None:
    """Forget the cached keys (called when SECRET_KEY or its fallbacks change)."""
    global _hmacs
    _hmacs = None


def _mac(keyed: Any, flag: bytes, body: bytes | memoryview) -> bytes:
    """Django's salted_hmac(SALT, flag + body, secret, algorithm="sha256") from a keyed HMAC."""
    mac = keyed.copy()
    mac.update(flag)
    mac.update(body)
    return mac.digest()


def sign(body: bytes, flags: int) -> bytes:
    """Frame and sign a serialized body (the MAC covers the flags byte, then the body)."""
    flag = bytes((flags,))
    return b"".join((MAGIC, flag, _mac(_keyed()[0], flag, body), body))


def verify(data: bytes, limit: int) -> None:
    """Raise a PackageError unless `data` is a package of ours within `limit` bytes."""
    if len(data) > limit:
        raise PackageTooLarge(f"package is {len(data)} bytes, over package_limit {limit}")
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        raise BadSignature("not a Django Q package (bad header)")
    flag = data[len(MAGIC) : len(MAGIC) + 1]
    sig = data[len(MAGIC) + 1 : HEADER_BYTES]
    body = memoryview(data)[HEADER_BYTES:]
    if not any(hmac.compare_digest(sig, _mac(keyed, flag, body)) for keyed in _keyed()):
        raise BadSignature("signature does not match SECRET_KEY or SECRET_KEY_FALLBACKS")


def pack(task: TaskPackage, serializer: str = "pickle", compress: bool = False, limit: int | None = None) -> bytes:
    """Serialize, optionally compress, and sign a task."""
    return _pack_fields(task.to_dict(), task.name, serializer, compress, limit)


def copy_fields(template: TaskPackage) -> dict[str, Any]:
    """What copies of `template` share, for pack_copy(): its to_dict() without id, name and args."""
    base = template.to_dict()
    for own in ("id", "name", "args"):
        base.pop(own, None)
    return base


def pack_copy(
    base: dict[str, Any],
    task_id: str,
    name: str,
    args: tuple,
    serializer: str = "pickle",
    compress: bool = False,
    limit: int | None = None,
    **more: Any,
) -> bytes:
    """pack() of a copy of the template whose copy_fields() are `base`, with its own id, name and
    args (and the `more` fields), without making the copy."""
    fields = base.copy()
    fields["id"] = task_id
    fields["name"] = name
    if args:
        fields["args"] = args
    if more:
        fields.update(more)
    return _pack_fields(fields, name, serializer, compress, limit)


def _pack_fields(fields: dict[str, Any], name: str, serializer: str, compress: bool, limit: int | None) -> bytes:
    if serializer == "json":
        body = json.dumps(fields, separators=(",", ":")).encode()
        flags = FLAG_JSON
    else:
        body = pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
        flags = 0
    # The limit holds for the body as a worker will read it, compressed or not:
    # a cluster refuses a package that inflates past it (unpack).
    if limit is not None and len(body) > limit:
        raise PackageTooLarge(f"task {name} is {len(body)} bytes serialized, over package_limit {limit}")
    if compress:
        body = zlib.compress(body)
        flags |= FLAG_ZLIB
    out = sign(body, flags)
    if limit is not None and len(out) > limit:
        raise PackageTooLarge(f"task {name} is {len(out)} bytes packed, over package_limit {limit}")
    return out


def unpack(data: bytes, limit: int, verified: bool = False) -> TaskPackage:
    """Check the signature (unless already `verified`), then decompress and deserialize."""
    if not verified:
        verify(data, limit)
    flags = data[len(MAGIC)]
    body = data[HEADER_BYTES:]
    try:
        if flags & FLAG_ZLIB:
            inflater = zlib.decompressobj()
            body = inflater.decompress(body, limit)
            if inflater.unconsumed_tail:
                raise PackageTooLarge(f"package inflates past package_limit {limit}")
        raw = json.loads(body) if flags & FLAG_JSON else pickle.loads(body)
        return TaskPackage.from_dict(raw)
    except PackageTooLarge:
        raise
    except Exception as exc:
        raise CorruptPackage(f"signed package does not decode: {type(exc).__name__}: {exc}") from exc
