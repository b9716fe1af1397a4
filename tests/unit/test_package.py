"""The signed package format: round trips, and every way a package is refused before it is read."""

import json
import pickle
from dataclasses import fields

import pytest

from django_q.runner import run_package
from django_q.conf import get_config
from django_q.exceptions import BadSignature, CorruptPackage, PackageError, PackageTooLarge
from django_q.package import (
    FLAG_JSON,
    FLAG_ZLIB,
    HEADER_BYTES,
    MAGIC,
    TaskPackage,
    callable_path,
    pack,
    copy_fields,
    pack_copy,
    sign,
    unpack,
    verify,
)

LIMIT = 1024 * 1024


def make_task(**fields) -> TaskPackage:
    defaults = {
        "id": "0123456789abcdef0123456789abcdef",
        "name": "amber-otter-comet-kite-abcdef",
        "func": "math.copysign",
        "args": (2, -2),
        "kwargs": {"flag": True, "items": [1, "two", None]},
        "hook": "tests.app.tasks.record_hook",
        "group": "g",
        "timeout": 3.5,
        "save": False,
        "ack_failure": True,
        "cluster": "c",
        "enqueued": 1_700_000_000.25,
    }
    return TaskPackage(**{**defaults, **fields})


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes((data[index] ^ 0x01,)) + data[index + 1 :]


class SideEffect:
    """Unpickling this creates the file at `path`: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class TestRoundTrip:
    @pytest.mark.parametrize("compress", [False, True])
    @pytest.mark.parametrize("serializer", ["pickle", "json"])
    def test_unpack_returns_what_was_packed(self, serializer, compress):
        task = make_task()
        data = pack(task, serializer=serializer, compress=compress)
        assert unpack(data, LIMIT) == task

    @pytest.mark.parametrize("compress", [False, True])
    @pytest.mark.parametrize("serializer", ["pickle", "json"])
    def test_the_flags_say_how_the_body_is_encoded(self, serializer, compress):
        flags = pack(make_task(), serializer=serializer, compress=compress)[len(MAGIC)]
        assert bool(flags & FLAG_JSON) == (serializer == "json")
        assert bool(flags & FLAG_ZLIB) == compress

    def test_a_json_body_is_json(self):
        data = pack(make_task(), serializer="json")
        assert json.loads(data[HEADER_BYTES:])["func"] == "math.copysign"

    def test_pickle_carries_callables_and_a_chain(self):
        task = make_task(func=callable_path, chain=(("math.copysign", (1, 2), {}), ("math.floor", (2.5,), {})))
        assert unpack(pack(task), LIMIT) == task

    def test_compression_makes_a_repetitive_package_smaller(self):
        task = make_task(args=("x" * 10_000,))
        assert len(pack(task, compress=True)) < len(pack(task)) // 10

    def test_a_package_starts_with_the_magic_bytes(self):
        assert pack(make_task()).startswith(MAGIC)


class TestPackCopy:
    @pytest.mark.parametrize("compress", [False, True])
    @pytest.mark.parametrize("serializer", ["pickle", "json"])
    def test_each_package_is_the_template_with_its_own_id_name_and_args(self, serializer, compress):
        template = make_task(id="", name="")
        ids = ["a" * 32, "b" * 32, "c" * 32]
        names = ["first-one", "second-one", "third-one"]
        args = [(1,), (), ("x", [2, 3])]
        base = copy_fields(template)
        packed = [pack_copy(base, i, n, a, serializer, compress) for i, n, a in zip(ids, names, args)]
        expected = [make_task(id=i, name=n, args=a) for i, n, a in zip(ids, names, args)]
        assert [unpack(data, LIMIT) for data in packed] == expected

    def test_a_package_over_the_limit_is_refused_by_name(self):
        template = make_task(id="", name="")
        with pytest.raises(PackageTooLarge, match="big-one"):
            for task_id, name, task_args in (("a" * 32, "small-one", (1,)), ("b" * 32, "big-one", ("x" * 5000,))):
                pack_copy(copy_fields(template), task_id, name, task_args, limit=2000)


class TestSignature:
    def test_the_signature_is_djangos_salted_hmac_over_flags_and_body(self, settings):
        from django.utils.crypto import salted_hmac

        from django_q.package import SALT

        data = pack(make_task())
        flags, sig, body = data[len(MAGIC) : len(MAGIC) + 1], data[len(MAGIC) + 1 : HEADER_BYTES], data[HEADER_BYTES:]
        assert sig == salted_hmac(SALT, flags + body, secret=settings.SECRET_KEY, algorithm="sha256").digest()

    @pytest.mark.parametrize("secret", ["another-key", "clé ☃ with non-ASCII", "k" * 100])
    def test_the_keyed_hmac_copy_is_salted_hmac_for_secret_key_and_for_a_fallback(self, secret):
        """package.py keys an HMAC once and copies it per package; Django's salted_hmac is the reference."""
        from django.test import override_settings
        from django.utils.crypto import salted_hmac

        from django_q.package import SALT

        body = b"any body \x00\xff"

        def framed(key: str) -> bytes:
            mac = salted_hmac(SALT, bytes((FLAG_JSON,)) + body, secret=key, algorithm="sha256").digest()
            return MAGIC + bytes((FLAG_JSON,)) + mac + body

        with override_settings(SECRET_KEY=secret, SECRET_KEY_FALLBACKS=[]):
            assert sign(body, FLAG_JSON) == framed(secret)
        with override_settings(SECRET_KEY="the-current-key", SECRET_KEY_FALLBACKS=["an-older-key", secret]):
            assert sign(body, FLAG_JSON) == framed("the-current-key")
            verify(framed(secret), LIMIT)
            verify(framed("an-older-key"), LIMIT)
            with pytest.raises(BadSignature):
                verify(framed("never-a-key"), LIMIT)

    def test_without_openssls_inner_hmac_the_python_wrapper_signs_alike(self, settings, monkeypatch):
        """package.py copies OpenSSL's HMAC object where hmac.HMAC has one, else the wrapper itself."""
        from django.utils.crypto import salted_hmac

        from django_q import package

        body = b"any body \x00\xff"
        expected = salted_hmac(package.SALT, bytes((FLAG_JSON,)) + body, secret=settings.SECRET_KEY,
                               algorithm="sha256").digest()
        package.reset_keys()
        monkeypatch.setattr(package, "_inner", lambda mac: mac)
        try:
            assert sign(body, FLAG_JSON)[len(MAGIC) + 1 : HEADER_BYTES] == expected
        finally:
            package.reset_keys()

    @pytest.mark.parametrize("compress", [False, True])
    @pytest.mark.parametrize("serializer", ["pickle", "json"])
    def test_a_flipped_bit_anywhere_is_a_bad_signature(self, serializer, compress):
        data = pack(make_task(), serializer=serializer, compress=compress)
        for index in range(len(data)):
            with pytest.raises(BadSignature):
                unpack(flipped(data, index), LIMIT)

    @pytest.mark.parametrize("keep", [0, len(MAGIC), HEADER_BYTES - 1, HEADER_BYTES, -1])
    def test_a_truncated_package_is_a_bad_signature(self, keep):
        data = pack(make_task())
        with pytest.raises(BadSignature):
            verify(data[:keep], LIMIT)

    def test_appended_bytes_are_a_bad_signature(self):
        with pytest.raises(BadSignature):
            verify(pack(make_task()) + b"\x00", LIMIT)

    def test_a_package_signed_with_another_secret_key_is_refused(self, settings):
        own = settings.SECRET_KEY
        settings.SECRET_KEY = "someone-elses-key"
        foreign = pack(make_task())
        settings.SECRET_KEY = own
        verify(pack(make_task()), LIMIT)  # the project's own packages still pass
        with pytest.raises(BadSignature, match="SECRET_KEY"):
            unpack(foreign, LIMIT)

    def test_a_package_signed_with_a_fallback_key_is_accepted(self, settings):
        settings.SECRET_KEY = "old-key"
        old = pack(make_task())
        settings.SECRET_KEY = "new-key"
        settings.SECRET_KEY_FALLBACKS = ["unrelated-key", "old-key"]
        assert unpack(old, LIMIT) == make_task()

    def test_new_packages_are_signed_with_the_current_key_not_a_fallback(self, settings):
        settings.SECRET_KEY = "new-key"
        settings.SECRET_KEY_FALLBACKS = ["old-key"]
        data = pack(make_task())
        settings.SECRET_KEY_FALLBACKS = []
        assert unpack(data, LIMIT) == make_task()

    def test_a_dropped_fallback_is_no_longer_accepted(self, settings):
        settings.SECRET_KEY = "old-key"
        old = pack(make_task())
        settings.SECRET_KEY = "new-key"
        settings.SECRET_KEY_FALLBACKS = []
        with pytest.raises(BadSignature):
            unpack(old, LIMIT)


class TestNeverUnpickled:
    def test_the_side_effect_pickle_really_has_a_side_effect(self, tmp_path):
        """Control: without the signature check, loading this pickle creates the file."""
        marker = tmp_path / "control"
        pickle.loads(pickle.dumps(SideEffect(marker))).close()
        assert marker.exists()

    def test_a_raw_pickle_is_refused_unread(self, tmp_path):
        marker = tmp_path / "pwned"
        with pytest.raises(BadSignature):
            unpack(pickle.dumps(SideEffect(marker)), LIMIT)
        assert not marker.exists()

    def test_a_pickle_behind_a_forged_header_is_refused_unread(self, tmp_path):
        marker = tmp_path / "pwned"
        forged = MAGIC + b"\x00" + b"\x00" * 32 + pickle.dumps({"id": SideEffect(marker)})
        with pytest.raises(BadSignature):
            unpack(forged, LIMIT)
        assert not marker.exists()

    def test_the_worker_refuses_it_too(self, tmp_path, q_cluster):
        q_cluster()
        marker = tmp_path / "pwned"
        forged = MAGIC + b"\x00" + b"\x00" * 32 + pickle.dumps(SideEffect(marker))
        with pytest.raises(BadSignature):
            run_package(forged, delivery_id="x", attempts=1, config=get_config())
        assert not marker.exists()

    def test_a_tampered_body_of_a_real_package_is_refused_unread(self, tmp_path):
        marker = tmp_path / "pwned"
        genuine = pack(make_task())
        tampered = genuine[:HEADER_BYTES] + pickle.dumps(SideEffect(marker))
        with pytest.raises(BadSignature):
            unpack(tampered, LIMIT)
        assert not marker.exists()


class TestSize:
    def test_pack_refuses_a_package_over_the_limit(self):
        task = make_task(args=("x" * 5000,))
        with pytest.raises(PackageTooLarge, match="over package_limit 1000"):
            pack(task, limit=1000)

    def test_pack_accepts_a_package_of_exactly_the_limit(self):
        size = len(pack(make_task()))
        assert len(pack(make_task(), limit=size)) == size

    def test_verify_refuses_a_package_over_the_limit(self):
        data = pack(make_task())
        verify(data, len(data))
        with pytest.raises(PackageTooLarge):
            verify(data, len(data) - 1)
        with pytest.raises(PackageTooLarge):
            unpack(data, len(data) - 1)

    def test_size_is_checked_before_the_signature(self):
        with pytest.raises(PackageTooLarge):
            verify(b"garbage" * 100, 10)

    def test_a_small_compressed_body_that_inflates_past_the_limit_is_refused(self):
        bomb = pack(make_task(args=(b"\x00" * 5_000_000,)), compress=True)
        limit = 100_000
        assert len(bomb) < limit, "the package itself passes the size check"
        verify(bomb, limit)
        with pytest.raises(PackageTooLarge, match="inflates past"):
            unpack(bomb, limit)

    def test_a_body_that_inflates_to_exactly_the_limit_is_accepted(self):
        task = make_task(args=(b"\x00" * 100_000,))
        inflated = len(pickle.dumps(task.to_dict(), protocol=pickle.HIGHEST_PROTOCOL))
        data = pack(task, compress=True)
        assert unpack(data, inflated) == task
        with pytest.raises(PackageTooLarge):
            unpack(data, inflated - 1)


class TestCorrupt:
    @pytest.mark.parametrize(
        ("body", "flags"),
        [
            (b"not a pickle", 0),
            (b"{not json", FLAG_JSON),
            (b"not zlib", FLAG_ZLIB),
            (pickle.dumps(["a", "list"]), 0),
            (pickle.dumps({"name": "no id"}), 0),
            (json.dumps({"id": "x", "name": "n", "func": "m.f", "bogus": 1, "args": 5}).encode(), FLAG_JSON),
        ],
        ids=["garbage", "bad-json", "bad-zlib", "not-a-dict", "missing-fields", "args-not-a-list"],
    )
    def test_a_signed_body_that_does_not_decode_is_corrupt(self, body, flags):
        data = sign(body, flags)
        verify(data, LIMIT)  # the signature holds
        with pytest.raises(CorruptPackage, match="signed package does not decode"):
            unpack(data, LIMIT)

    def test_every_package_error_is_a_package_error(self):
        assert issubclass(BadSignature, PackageError)
        assert issubclass(PackageTooLarge, PackageError)
        assert issubclass(CorruptPackage, PackageError)


def test_unknown_fields_of_a_newer_sender_are_ignored():
    data = {**make_task().to_dict(), "deadline_hint": 5}
    assert TaskPackage.from_dict(data) == make_task()


@pytest.mark.parametrize(
    "data",
    [
        {"id": "i", "name": "n", "func": "m.f"},
        {"id": "i", "name": "n", "func": "m.f", "args": [1, [2]], "kwargs": {"k": 1}, "retry_on": ["a.B"],
         "history": [{"attempt": 1}], "chain": [["m.g", [1], {}]], "priority": -5, "cached": 60},
        {"id": "i", "name": "n", "func": "m.f", "args": None, "chain": None, "kwargs": None},
    ],
    ids=["required-only", "lists-from-json", "nones"],
)
def test_from_dict_makes_what_the_constructor_makes(data):
    """from_dict fills the slots itself (for speed): pinned to the dataclass's own __init__."""
    tuples = {name: tuple(data.get(name) or ()) for name in ("args", "retry_on", "history")}
    chain = tuple(tuple(link) for link in data.get("chain") or ())
    made = TaskPackage(**{**data, **tuples, "chain": chain})
    got = TaskPackage.from_dict(data)
    assert got == made
    assert repr(got) == repr(made)
    assert [type(getattr(got, f.name)) for f in fields(TaskPackage)] == [
        type(getattr(made, f.name)) for f in fields(TaskPackage)
    ]


def test_from_dict_gives_each_package_its_own_default_kwargs():
    first = TaskPackage.from_dict({"id": "i", "name": "n", "func": "m.f"})
    first.kwargs["x"] = 1
    assert TaskPackage.from_dict({"id": "j", "name": "n", "func": "m.f"}).kwargs == {}


def test_from_dict_refuses_a_package_without_a_required_field():
    with pytest.raises(TypeError, match="id"):
        TaskPackage.from_dict({"name": "n", "func": "m.f"})


def test_func_name_is_the_dotted_path_of_any_callable():
    assert make_task().func_name == "math.copysign"
    assert make_task(func=callable_path).func_name == "django_q.funcs.callable_path"


def test_a_package_pickled_between_processes_comes_back_equal_and_still_frozen():
    # __reduce__ rebuilds it through the slots' setters, not __init__: the same
    # object as the constructor makes, every field set, none settable after.
    task = make_task(chain=(("math.floor", (1.5,), {}),), retries=2, retry_on=("builtins.ValueError",),
                     history=({"attempt": 1},), priority=5)
    back = pickle.loads(pickle.dumps(task, pickle.HIGHEST_PROTOCOL))
    assert back == task
    assert repr(back) == repr(task)
    with pytest.raises(AttributeError):
        back.name = "other"


# pack() of GOLDEN_TASK with SECRET_KEY "golden-key", as b95f544 made them (on Python 3.11 and 3.12
# alike): a package enqueued by any version must read in any other, so the bytes stay the same.
GOLDEN_PICKLE = bytes.fromhex(
    "44510100ac9e0aa16f2d442625865c4a221e3cc09d31aa7764047c5e02c0b5a271dc3f69800595d3000000000000007d"
    "94288c026964948c203366613263316434376538623430613139633664326535663761386239633064948c046e616d65"
    "948c1f636c61792d6d61676e65742d706172726f742d72616461722d386239633064948c0466756e63948c0d6d617468"
    "2e636f70797369676e948c0461726773944b024afeffffff86948c066b7761726773947d948c0178948c02c3a994738c"
    "04686f6f6b948c0a6d6174682e666c6f6f72948c0567726f7570948c0167948c08656e717565756564944741dac44cf5"
    "d000008c087072696f72697479944b05752e"
)
# pack_copy() of it (what enqueue sends: its own fields after the shared ones), pickled.
GOLDEN_COPY = bytes.fromhex(
    "445101009129f149ef2f666ac89c2677ef61896a4b7bbf61dcf250b33f58dff218b70910800595d3000000000000007d"
    "94288c0466756e63948c0d6d6174682e636f70797369676e948c066b7761726773947d948c0178948c02c3a994738c04"
    "686f6f6b948c0a6d6174682e666c6f6f72948c0567726f7570948c0167948c08656e717565756564944741dac44cf5d0"
    "00008c087072696f72697479944b058c026964948c203366613263316434376538623430613139633664326535663761"
    "386239633064948c046e616d65948c1f636c61792d6d61676e65742d706172726f742d72616461722d38623963306494"
    "8c0461726773944b024afeffffff8694752e"
)
GOLDEN_JSON = bytes.fromhex(
    "44510102962178e951ee3d8115876b390342ff305887c692fcd6176268b2c6ca0ff4be097b226964223a223366613263"
    "316434376538623430613139633664326535663761386239633064222c226e616d65223a22636c61792d6d61676e6574"
    "2d706172726f742d72616461722d386239633064222c2266756e63223a226d6174682e636f70797369676e222c226172"
    "6773223a5b322c2d325d2c226b7761726773223a7b2278223a225c7530306539227d2c22686f6f6b223a226d6174682e"
    "666c6f6f72222c2267726f7570223a2267222c22656e717565756564223a313739363238393439352e32352c22707269"
    "6f72697479223a357d"
)


def golden_task() -> TaskPackage:
    return TaskPackage(
        id="3fa2c1d47e8b40a19c6d2e5f7a8b9c0d", name="clay-magnet-parrot-radar-8b9c0d", func="math.copysign",
        args=(2, -2), kwargs={"x": "é"}, hook="math.floor", group="g", enqueued=1796289495.25, priority=5,
    )


@pytest.mark.parametrize("serializer, golden", [("pickle", GOLDEN_PICKLE), ("json", GOLDEN_JSON)])
def test_packages_are_byte_for_byte_what_earlier_versions_made_and_read_back(serializer, golden):
    from django.test import override_settings

    with override_settings(SECRET_KEY="golden-key", SECRET_KEY_FALLBACKS=[]):
        assert pack(golden_task(), serializer) == golden
        assert unpack(golden, LIMIT) == golden_task()
        if serializer == "pickle":
            task = golden_task()
            assert pack_copy(copy_fields(task), task.id, task.name, task.args, serializer) == GOLDEN_COPY
            assert unpack(GOLDEN_COPY, LIMIT) == task
