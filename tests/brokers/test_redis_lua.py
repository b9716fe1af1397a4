"""redis_lua's scripts run through redis_calls' hand-packed EVALSHA calls, pinned to redis-py's own Script and command packer on real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import Connection, PythonRespSerializer

from django_q.brokers import redis_calls
from django_q.brokers.redis import KEY_NAMES, PRIORITY_SHIFT
from django_q.brokers.redis_client import make_client
from django_q.brokers.redis_lua import (
    ACK,
    CANCEL,
    COMMON,
    COUNTS,
    DEQUEUE,
    ENQUEUE,
    ENQUEUE_UNIQUE,
    LOOKUP,
    MARK_RUNNING,
    PENDING,
    PUBLISH_STATUS,
    RENEW,
    REQUEUE,
    RETRY,
    STATUSES,
)
from django_q.brokers.redis_calls import Lua
from django_q.brokers.redis_rates import DEFER, TAKE_STARTS, take_call
from django_q.rates import parse_limit

# Replies of the two paths run a few milliseconds apart on the server's clock,
# so a value near the current time in epoch milliseconds (a lease end, a due
# time) may differ by that. Message ids are far above it.
CLOCK_SLACK_MS = 1000
DAY_MS = 86_400_000


def same(ours: Any, theirs: Any) -> bool:
    """Whether two script replies are equal, epoch-millisecond values within CLOCK_SLACK_MS."""
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs))
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, (int, bytes)) and _server_time(ours) and _server_time(theirs):
        return abs(float(ours) - float(theirs)) <= CLOCK_SLACK_MS
    return ours == theirs


def _server_time(value: int | bytes) -> bool:
    """Whether `value` reads as epoch milliseconds within a day of now."""
    try:
        return abs(float(value) - time.time() * 1000) < DAY_MS
    except ValueError:
        return False


class Pair:
    """The same script calls on two fresh queues: one through redis_calls.Lua, one through redis-py's Script."""

    def __init__(self, client: redis.Redis, queue_name: str) -> None:
        self.client = client
        self.lua = Lua(client)
        self.ours = [f"django_q:{{{queue_name}a}}:{key}" for key in (*KEY_NAMES, "status", "status_expiry")]
        self.theirs = [f"django_q:{{{queue_name}b}}:{key}" for key in (*KEY_NAMES, "status", "status_expiry")]

    def call(self, source: str, args: list[Any], status: bool = False) -> Any:
        """Run `source` on both queues, assert the same reply, and return ours."""
        keys = slice(len(KEY_NAMES), None) if status else slice(0, len(KEY_NAMES))
        ours = self.lua.script(source)(keys=self.ours[keys], args=args)
        theirs = self.client.register_script(source)(keys=self.theirs[keys], args=args)
        assert same(ours, theirs), (ours, theirs)
        return ours

    def close(self) -> None:
        self.lua.close()
        self.client.delete(*self.ours, *self.theirs)


@pytest.fixture
def pair(queue_name: str, redis_url: str) -> Iterator[Pair]:
    client = make_client(redis_url)
    pair = Pair(client, queue_name)
    yield pair
    pair.close()
    client.close()


def test_every_script_replies_as_through_redis_pys_script(pair: Pair) -> None:
    base = 100 * PRIORITY_SHIFT  # priority 0
    first, second = pair.call(ENQUEUE, [base, 0, b"\x00first\xff", "k1", b"second", ""])
    pair.call(ENQUEUE, [95 * PRIORITY_SHIFT, 60_000, b"later", "k3"])
    third = pair.call(ENQUEUE, [base, 0, "third é", "k4"])  # one message: its id alone
    assert pair.call(COMMON + COUNTS, []) == [3, 0]
    for key in ("k1", "k3", "nope"):
        pair.call(COMMON + LOOKUP, [key])
    pair.call(COMMON + PENDING, [10])
    hint, *leased = pair.call(COMMON + DEQUEUE, [2, 30_000])
    assert hint == 30_000  # ms until the first lease ends, sooner than the delayed one
    assert leased[0::3] == [first, second]
    pair.call(COMMON + MARK_RUNNING, [first, b"worker 1", "999", b"nobody"])
    pair.call(COMMON + LOOKUP, ["k1"])
    pair.call(COMMON + RENEW, [30_000, first, "999"])
    assert pair.call(COMMON + CANCEL, ["k1"])[0] == b"requested"
    assert pair.call(COMMON + CANCEL, ["k4"])[0] == b"removed"
    pair.call(COMMON + REQUEUE, [second, third])
    pair.call(COMMON + RETRY, [first, b"retried", 0])
    pair.call(COMMON + PENDING, [10])
    _, *again = pair.call(COMMON + DEQUEUE, [5, 30_000])
    pair.call(COMMON + ACK, again[0::3])
    assert pair.call(COMMON + COUNTS, []) == [0, 0]
    pair.call(PUBLISH_STATUS, ["c1", b"status \x00", 5_000], status=True)
    pair.call(PUBLISH_STATUS, ["c2", "état", 10_000], status=True)
    assert sorted(pair.call(STATUSES, [], status=True)) == [b"status \x00", "état".encode()]


def test_the_rate_limit_scripts_reply_as_through_redis_pys_script(pair: Pair, queue_name: str) -> None:
    base = 100 * PRIORITY_SHIFT
    first, second = pair.call(ENQUEUE, [base, 0, b"a", "k1", b"b", ""])
    pair.call(COMMON + DEQUEUE, [2, 30_000])
    pair.call(COMMON + DEFER, [first, 60_000, second, 0, "999", 0])
    assert pair.call(COMMON + LOOKUP, ["k1"])[:4] == [b"delayed", first, b"a", 0]
    limits = {"app.f": parse_limit("2/h", "f"), "group:g": parse_limit("1/h", "g")}
    wanted = [("app.f", "group:g"), ("app.f",), ("app.f",), ("group:g",)]
    replies, used = [], []
    for name, call in ((queue_name + "a", pair.lua.script(TAKE_STARTS)),
                       (queue_name + "b", pair.client.register_script(TAKE_STARTS))):
        keys, args = take_call(name, wanted, limits)
        used += keys
        replies.append(call(keys=keys, args=args))
    pair.client.delete(*used)
    ours, theirs = replies
    assert ours[:2] == theirs[:2] == [0, 0]
    # Waits in µs, the two calls a moment apart.
    assert all(0 < a and abs(a - b) <= CLOCK_SLACK_MS * 1000 for a, b in zip(ours[2:], theirs[2:]))


def test_a_failing_script_raises_the_same_error(pair: Pair) -> None:
    errors = []
    for call in (pair.lua.script(ENQUEUE), pair.client.register_script(ENQUEUE)):
        with pytest.raises(redis.exceptions.ResponseError) as info:
            call(keys=pair.ours[: len(KEY_NAMES)], args=["not a number", 0, b"x", ""])
        errors.append(type(info.value))
    assert errors[0] is errors[1]
    assert pair.call(COMMON + COUNTS, []) == [0, 0]  # the connection still reads replies in step


COMMANDS = [
    pytest.param((b"\x00bytes\xff", b"\r\n"), id="bytes"),
    pytest.param(("str", "é ☃ non-ASCII"), id="str"),
    pytest.param((0, -1, 7, 2**53, 100 * 2**44), id="int"),
    pytest.param((0.5, 0.1, -2.25, 1e20, 1e-7), id="float"),
    pytest.param(("", b""), id="empty"),
    pytest.param((b"x" * 100_000, "k", 30_000), id="large"),
]


@pytest.mark.parametrize("args", [*COMMANDS, pytest.param((memoryview(b"view"), bytearray(b"array")), id="buffers")])
def test_the_evalsha_packer_writes_the_bytes_redis_py_writes(args: tuple[Any, ...]) -> None:
    """pack_evalsha (the packer without hiredis) against redis-py's Connection.pack_command, its head cached."""
    heads: dict[tuple, bytes] = {}
    encoder = Connection().encoder
    for keys in (["django_q:{q}:seq", "django_q:{q}:ready"], ["django_q:{q}:seq", "django_q:{é}:ready"], []):
        for _ in range(2):  # the second from the cached head
            command = ("EVALSHA", "0" * 40, len(keys), *keys, *args)
            assert redis_calls.pack_evalsha("0" * 40, keys, args, encoder, heads) == b"".join(
                Connection().pack_command(*command)
            )
    assert len(heads) == 3


def test_the_evalsha_packer_encodes_text_as_the_connections_encoder_does() -> None:
    """A client set up with another `encoding` (and `encoding_errors`): str arguments follow it."""
    from redis._parsers.encoders import Encoder

    encoder = Encoder("latin-1", "replace", False)
    args = ("é ☃", "plain", b"\xe9", 5)
    command = ("EVALSHA", "0" * 40, 1, "django_q:{é}:seq", *args)
    expected = b"".join(PythonRespSerializer(6000, encoder.encode).pack(*command))
    assert b"\xe9 ?" in expected
    assert redis_calls.pack_evalsha("0" * 40, ["django_q:{é}:seq"], args, encoder, {}) == expected


@pytest.mark.parametrize("value", [True, None, object()])
def test_the_evalsha_packer_refuses_what_redis_py_refuses(value: Any) -> None:
    encoder = Connection().encoder
    with pytest.raises(redis.exceptions.DataError):
        encoder.encode(value)
    with pytest.raises(redis.exceptions.DataError):
        redis_calls.pack_evalsha("0" * 40, [], [value], encoder, {})


@pytest.mark.parametrize("hiredis", [True, False], ids=["hiredis", "python"])
def test_a_bound_script_replies_as_through_redis_pys_script(
    pair: Pair, hiredis: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lua.bind (the enqueues' call: its keys packed once) against redis-py's Script, with hiredis and without."""
    if hiredis and redis_calls._pack is None:
        pytest.skip("hiredis is not installed")
    if not hiredis:
        monkeypatch.setattr(redis_calls, "_pack", None)
    keys = len(KEY_NAMES)
    ours = pair.lua.bind(ENQUEUE, pair.ours[:keys])
    theirs = pair.client.register_script(ENQUEUE)
    base = 100 * PRIORITY_SHIFT
    for args in ([base, 0, b"\x00one\xff", "k1"], [base, 60_000, "two é", ""], [base, 0, b"a", "k2", b"b", ""]):
        assert same(ours(args), theirs(keys=pair.theirs[:keys], args=args))
    assert pair.call(COMMON + PENDING, [10])[2] == b"\x00one\xff"
    unique = pair.lua.bind(ENQUEUE_UNIQUE, pair.ours[:keys])
    unique_theirs = pair.client.register_script(ENQUEUE_UNIQUE)
    for args in ([base, 0, b"u", "k3", "one"], [base, 0, b"v", "k4", "one"]):
        assert same(unique(args), unique_theirs(keys=pair.theirs[:keys], args=args))
    assert unique([base, 0, b"w", "k5", "one"]) == b"k3"


@pytest.mark.parametrize("args", COMMANDS)
def test_the_hand_packer_writes_the_bytes_redis_py_writes(args: tuple[Any, ...]) -> None:
    if redis_calls._pack is None:
        pytest.skip("without hiredis redis_lua packs with redis-py's own Connection.pack_command")
    command = ("EVALSHA", "0" * 40, 2, "django_q:{q}:seq", "django_q:{q}:ready", *args)
    ours = redis_calls._pack(command)
    assert ours == b"".join(Connection().pack_command(*command))
    # With hiredis installed, Connection packs through hiredis too: the pure
    # Python packer is redis-py's own rule, which hiredis must keep to.
    python = PythonRespSerializer(6000, Connection().encoder.encode)
    assert ours == b"".join(python.pack(*command))


def test_a_script_called_after_a_blocking_command_replies_as_called_alone(pair: Pair, queue_name: str) -> None:
    wake = pair.ours[KEY_NAMES.index("wake")]
    pair.client.lpush(wake, 1)
    enqueue = pair.lua.script(ENQUEUE)
    enqueue(keys=pair.ours, args=[100 * PRIORITY_SHIFT, 0, b"body", "k1"])
    dequeue = pair.lua.script(COMMON + DEQUEUE)
    # BLPOP's reply (the token) is dropped; the script's is the dequeue's, as through redis-py's Script.
    pair.client.register_script(ENQUEUE)(keys=pair.theirs, args=[100 * PRIORITY_SHIFT, 0, b"body", "k1"])
    ours = pair.lua.call_after(("BLPOP", wake, "0.5"), dequeue.script, pair.ours, [1, 30_000, ""])
    theirs = pair.client.register_script(COMMON + DEQUEUE)(keys=pair.theirs, args=[1, 30_000, ""])
    assert same(ours, theirs), (ours, theirs)
    assert ours[2] == b"body"
    # A script the server has not seen (as after a restart) is loaded, then run.
    unseen = pair.lua.script(f"return '{queue_name}'")
    assert pair.lua.call_after(("BLPOP", wake, "0.01"), unseen.script, [], []) == queue_name.encode()
    assert pair.lua.call(unseen.script, [], []) == queue_name.encode()  # the connection is still in step


@pytest.mark.parametrize("delay", [0, 60_000])
def test_one_message_at_a_time_leaves_the_keys_a_batch_leaves(pair: Pair, delay: int) -> None:
    """ENQUEUE's one-message path (async_task) against its batch path (async_many), key by key."""
    enqueue = pair.lua.script(ENQUEUE)
    base = 90 * PRIORITY_SHIFT
    singles = [enqueue(keys=pair.ours, args=[base, delay, body, key]) for body, key in ((b"a", "k1"), (b"b", ""))]
    batch = enqueue(keys=pair.theirs, args=[base, delay, b"a", "k1", b"b", ""])
    assert singles == batch
    for name in KEY_NAMES:
        ours, theirs = pair.ours[KEY_NAMES.index(name)], pair.theirs[KEY_NAMES.index(name)]
        kind = pair.client.type(ours)
        assert kind == pair.client.type(theirs), name
        if name == "wake":  # a token per call
            assert (pair.client.llen(ours), pair.client.llen(theirs)) == (2, 1)
        elif kind == b"hash":
            assert pair.client.hgetall(ours) == pair.client.hgetall(theirs), name
        elif kind == b"zset":
            ours_z, theirs_z = ([[m, int(score)] for m, score in pair.client.zrange(key, 0, -1, withscores=True)]
                                for key in (ours, theirs))
            assert same(ours_z, theirs_z), (name, ours_z, theirs_z)  # a due time may be a few ms apart
        elif kind == b"string":
            assert pair.client.get(ours) == pair.client.get(theirs), name


def test_without_hiredis_the_scripts_reply_as_through_redis_pys_script(
    pair: Pair, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_calls, "_pack", None)  # as installed without hiredis: pack_evalsha writes the calls
    test_every_script_replies_as_through_redis_pys_script(pair)
    test_a_script_called_after_a_blocking_command_replies_as_called_alone(pair, queue_name)
