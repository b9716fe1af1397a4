"""django-q's packages and tables taken into ours: what is read, what is refused, what is rewritten."""

import base64
import pickle
import sys
import types
import zlib
from datetime import UTC, datetime

import pytest
from django.core import signing

from django_q import legacy
from django_q.exceptions import BadSignature, CorruptPackage
from django_q.legacy import legacy_names, loads, package_of
from django_q.migrations._adopt import _args_text, _pickle_bytes


class PickleSerializer:
    """django-q's: pickle, highest protocol."""

    def dumps(self, obj):
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data):
        return pickle.loads(data)


def signed(task, salt="default", key=None, compress=False) -> str:
    return signing.dumps(task, key=key, salt=salt, compress=compress, serializer=PickleSerializer)


TASK = {"id": "a" * 32, "name": "one-two", "func": "math.copysign", "args": (2, -2), "kwargs": {}, "group": "g",
        "save": False, "timeout": 30, "started": datetime(2026, 1, 2, tzinfo=UTC), "cached": True,
        "chain": [("math.floor", (1.5,)), ("math.ceil",)]}


def test_a_package_signed_with_our_key_and_name_is_read(settings):
    settings.Q_CLUSTER = {"name": "shop"}
    assert loads(signed(TASK, salt="shop"), legacy_names()) == TASK
    assert loads(signed(TASK, salt="shop", compress=True).encode(), ["shop"]) == TASK


def test_a_package_signed_with_another_key_or_name_is_never_unpickled(monkeypatch):
    unpickled = []
    monkeypatch.setattr(legacy, "_Unpickler", lambda *args: unpickled.append(args))
    for payload, salts in ((signed(TASK, key="another-key"), ["default"]), (signed(TASK, salt="a"), ["b"])):
        with pytest.raises(BadSignature, match="signature does not match SECRET_KEY"):
            loads(payload, salts)
    for junk in ("not a package at all", b"\xff\xfe binary"):
        with pytest.raises(BadSignature):
            loads(junk, ["default"])
    assert unpickled == []


def test_a_signed_body_that_is_not_a_task_is_corrupt():
    with pytest.raises(CorruptPackage, match="not a task dict"):
        loads(signed(["a", "list"]), ["default"])
    forged_body = signing.TimestampSigner(salt="default").sign(base64.urlsafe_b64encode(b"junk").decode())
    with pytest.raises(CorruptPackage, match="does not unpickle"):
        loads(forged_body, ["default"])


def test_pytz_utc_of_django_3_reads_without_pytz(monkeypatch):
    # Django 3.2's timezone.now() carries pytz's UTC, pickled as a call of pytz._UTC().
    fake = types.ModuleType("pytz")

    def _UTC():
        return "pytz UTC"

    _UTC.__module__, _UTC.__qualname__ = "pytz", "_UTC"
    fake._UTC = _UTC
    monkeypatch.setitem(sys.modules, "pytz", fake)
    payload = signed({**TASK, "started": _Reduced(_UTC)})
    assert loads(payload, ["default"])["started"] == "pytz UTC"  # pytz installed: its own
    monkeypatch.setitem(sys.modules, "pytz", None)  # not installed: import fails
    assert loads(payload, ["default"])["started"] is UTC


class _Reduced:
    def __init__(self, func):
        self.func = func

    def __reduce__(self):
        return (self.func, ())


def test_their_task_becomes_our_package_with_the_same_id_and_name():
    package = package_of(TASK)
    assert (package.id, package.name, package.func, package.args, package.group) == (
        "a" * 32, "one-two", "math.copysign", (2, -2), "g")
    assert (package.save, package.timeout, package.enqueued) == (False, 30, TASK["started"].timestamp())
    assert package.chain == (("math.floor", (1.5,), {}), ("math.ceil", (), {}))
    assert package.cached is True and package.iter_count == 0 and package.parent is None


def test_a_part_of_their_async_iter_is_a_part_of_ours():
    package = package_of({**TASK, "iter_count": 3, "iter_cached": 60})
    assert (package.parent, package.iter_count, package.iter_cached) == ("g", 3, 60)


def test_a_task_dict_we_cannot_read_is_corrupt_not_a_crash():
    for task in ({"func": "f"}, {"id": "x", "func": "f", "args": 5}, {"id": "x", "func": "f", "kwargs": [1]}):
        with pytest.raises(CorruptPackage, match="cannot be read"):
            package_of(task)


def test_their_schedule_args_become_our_notation():
    assert _args_text("('minutes',)") == "'minutes'"
    assert _args_text("(1, 'a', [2])") == "1, 'a', [2]"
    assert _args_text("()") is None
    assert _args_text("'one'") == "'one'"  # one value: the same call either way
    assert _args_text("[1, 2]") == "[1, 2]"
    assert _args_text("1, 2") == "1, 2"  # ours already: read again, the same
    assert _args_text("not python") == "not python"
    assert _args_text(None) is None


def test_their_pickles_become_bytes():
    value = {"a": [1, 2]}
    raw = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(_pickle_bytes(base64.b64encode(raw).decode())) == value
    assert pickle.loads(_pickle_bytes(base64.b64encode(zlib.compress(raw)).decode())) == value
    assert _pickle_bytes(memoryview(raw)) == raw
    assert _pickle_bytes(None) is None
