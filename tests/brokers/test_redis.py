"""What the contract does not say about the Redis broker: key layout, client settings, wake-up latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from django_q.brokers.redis import ENQUEUE_BATCH, KEY_NAMES, RedisBroker
from django_q.brokers.redis_lua import UNPACK_BATCH, WAKE_CAP


@pytest.fixture
def redis_kwargs(redis_url: str) -> dict[str, Any]:
    """The test Redis as redis.Redis keyword arguments."""
    kwargs = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    return {"host": kwargs["host"], "port": kwargs["port"], "db": kwargs["db"]}


@pytest.fixture
def broker(queue_name: str, redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(queue_name, 30.0, redis_url)
    yield broker
    broker.purge()
    broker.close()


def test_keys_follow_the_layout_and_purge_deletes_them(
    broker: RedisBroker, queue_name: str, redis_client: redis.Redis
) -> None:
    broker.enqueue(b"a")
    broker.enqueue(b"b", delay=60)
    broker.dequeue()
    pattern = f"django_q:{{{queue_name}}}:*"
    names = {key.decode().rsplit(":", 1)[1] for key in redis_client.keys(pattern)}
    assert names <= set(KEY_NAMES) and {"seq", "payload", "leased", "delayed"} <= names
    broker.purge()
    assert redis_client.keys(pattern) == []


def test_a_dequeue_and_an_ack_past_the_scripts_command_batch_leave_nothing_behind(
    broker: RedisBroker, queue_name: str, redis_client: redis.Redis
) -> None:
    # The scripts hand at most UNPACK_BATCH ids to one command; a call over it takes several.
    n = 2 * UNPACK_BATCH + 7
    broker.enqueue_many([b"p%d" % i for i in range(n)], keys=[f"k{i}" for i in range(n)])
    got = broker.dequeue(n, owner="c1")
    assert [d.payload for d in got] == [b"p%d" % i for i in range(n)]
    assert {d.attempts for d in got} == {1}
    assert redis_client.hlen(f"django_q:{{{queue_name}}}:owner") == n
    broker.ack([d.id for d in got])
    left = [k.decode().rsplit(":", 1)[1] for k in redis_client.keys(f"django_q:{{{queue_name}}}:*")]
    # What stays: the id sequence, the wake list, and the owner's beat (a cluster's, not a task's).
    assert sorted(left) == ["beats", "seq", "wake"]
    assert redis_client.zrange(f"django_q:{{{queue_name}}}:beats", 0, -1) == [b"c1"]


def test_a_batch_whose_last_call_carries_one_message_returns_every_id(broker: RedisBroker) -> None:
    # The script answers one message with its id alone, a batch with a list.
    ids = broker.enqueue_many([b"m"] * (ENQUEUE_BATCH + 1))
    assert len(set(ids)) == ENQUEUE_BATCH + 1 and all(i.isdigit() for i in ids)
    assert broker.enqueue(b"one").isdigit()


def test_id_is_the_ready_score(broker: RedisBroker, queue_name: str, redis_client: redis.Redis) -> None:
    low = broker.enqueue(b"low", priority=-1)
    high = broker.enqueue(b"high", priority=1)
    ready = f"django_q:{{{queue_name}}}:ready"
    assert redis_client.zscore(ready, low) == int(low)
    assert int(high) < int(low)


def test_the_wake_list_holds_a_token_per_enqueue_and_enqueues_trim_it_once_past_twice_its_cap(
    broker: RedisBroker, queue_name: str, redis_client: redis.Redis
) -> None:
    """While nobody pops the tokens, an enqueue trims the list back to WAKE_CAP only once it grew past twice
    that (a command in WAKE_CAP enqueues, not one each); a dequeue that passes the baton trims it to WAKE_CAP."""
    wake = f"django_q:{{{queue_name}}}:wake"
    for payload in (b"a", b"b", b"c"):
        broker.enqueue(payload)
    assert redis_client.llen(wake) == 3
    for _ in range(2 * WAKE_CAP - 3):
        broker.enqueue(b"x")
    assert redis_client.llen(wake) == 2 * WAKE_CAP
    broker.enqueue(b"x")
    assert redis_client.llen(wake) == WAKE_CAP
    broker.enqueue_many([b"y"] * 10)
    broker.enqueue_unique(b"z", "one", "k1")
    assert redis_client.llen(wake) == WAKE_CAP + 2
    broker.dequeue()
    assert redis_client.llen(wake) == WAKE_CAP
    for _ in range(WAKE_CAP + 1):
        broker.enqueue_unique(b"z", "two", "k2")  # held after the first: nothing sent, no token
    assert redis_client.llen(wake) == WAKE_CAP + 1


def test_dict_setting_and_decoding_client_still_carry_bytes(queue_name: str, redis_kwargs: dict[str, Any]) -> None:
    broker = RedisBroker(queue_name, 30.0, {**redis_kwargs, "decode_responses": True})
    try:
        broker.enqueue(b"\xff\x00")
        (delivery,) = broker.dequeue()
        assert delivery.payload == b"\xff\x00"
    finally:
        broker.purge()
        broker.close()


@pytest.mark.skipif(not hasattr(redis, "driver_info"), reason="redis-py before 7.1 reads its version once")
@pytest.mark.parametrize("setting", ["url", "dict"])
def test_connections_share_one_driver_info_that_names_redis_py_as_it_would(
    setting: str, queue_name: str, redis_url: str, redis_kwargs: dict[str, Any]
) -> None:
    """Made once per process (redis-py makes one per connection, each reading the package metadata), and
    what CLIENT SETINFO sends is what redis-py would send by itself."""
    from redis.utils import get_lib_version

    given = redis_url if setting == "url" else redis_kwargs
    brokers = [RedisBroker(queue_name, 30.0, given) for _ in range(2)]
    try:
        made = [b.client.connection_pool.make_connection() for b in brokers]
        assert made[0].driver_info is made[1].driver_info
        own = redis.Redis(host="127.0.0.1").connection_pool.make_connection().driver_info
        assert (made[0].driver_info.formatted_name, made[0].driver_info.lib_version) == (
            own.formatted_name, get_lib_version())
        for conn in made:
            conn.disconnect()
    finally:
        for b in brokers:
            b.close()


def test_blocking_wait_longer_than_the_socket_timeout(queue_name: str, redis_kwargs: dict[str, Any]) -> None:
    broker = RedisBroker(queue_name, 30.0, {**redis_kwargs, "socket_timeout": 0.4})
    try:
        started = time.monotonic()
        assert broker.dequeue(timeout=1.2) == []
        assert time.monotonic() - started >= 1.1
    finally:
        broker.close()


def test_idle_consumer_wakes_within_milliseconds(broker: RedisBroker, queue_name: str, redis_url: str) -> None:
    consumer = RedisBroker(queue_name, 30.0, redis_url)
    latencies: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        for _ in range(5):
            received = pool.submit(lambda: consumer.dequeue(timeout=5) and time.perf_counter())
            time.sleep(0.1)
            sent = time.perf_counter()
            broker.enqueue(b"x")
            latencies.append(received.result(timeout=10) - sent)
    consumer.close()
    assert statistics.median(latencies) < 0.05


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The scripts' and the waits' writes to Redis from now on (until monkeypatch.undo()), each joined."""
    writes: list[bytes] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(conn: Any, command: Any, check_health: bool = True) -> None:
        parts = [bytes(part) for part in command] if isinstance(command, list) else [bytes(command)]
        if any(b"EVALSHA" in part or b"BLPOP" in part for part in parts):  # not a connect's
            writes.append(b"".join(parts))
        send(conn, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    return writes


def test_the_wait_and_the_dequeue_after_it_go_in_one_write(
    broker: RedisBroker, queue_name: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting dequeue sends each BLPOP with the dequeue that follows it: the server runs that dequeue the
    moment the wait ends, with no round trip between (W3's pick-up latency)."""
    redis_client.lpush(f"django_q:{{{queue_name}}}:wake", 1)  # a token with nothing ready: one wake for nothing
    writes = _record_writes(monkeypatch)
    assert broker.dequeue(timeout=1.0) == []
    monkeypatch.undo()
    # Dequeue; BLPOP (the token) + dequeue; BLPOP (until the time is up) + dequeue (and maybe one more short
    # wait, as the server ends a wait to the millisecond): never a BLPOP without the dequeue after it.
    assert len(writes) >= 3
    assert b"BLPOP" not in writes[0]
    assert all(b"BLPOP" in write and write.index(b"BLPOP") < write.index(b"EVALSHA") for write in writes[1:])


def test_after_a_dequeue_that_emptied_the_queue_the_next_wake_costs_one_round_trip(
    broker: RedisBroker, queue_name: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What becomes ready after a dequeue that left nothing ready pushes a wake token (an enqueue) or comes
    due by that dequeue's hint (a delay): the next waiting dequeue starts with the BLPOP, the dequeue behind
    it, not with a dequeue that would find nothing first."""
    wake = f"django_q:{{{queue_name}}}:wake"
    broker.enqueue(b"a", delay=0.3)
    assert broker.dequeue(4) == []  # its hint: "a" is due in 0.3 s
    redis_client.delete(wake)  # the delayed enqueue's token, as an earlier wait would have popped it
    writes = _record_writes(monkeypatch)
    assert [d.payload for d in broker.dequeue(4, timeout=5.0)] == [b"a"]
    monkeypatch.undo()
    assert len(writes) == 1 and b"BLPOP" in writes[0]

    redis_client.delete(wake)
    broker.enqueue(b"b")
    writes = _record_writes(monkeypatch)
    assert [d.payload for d in broker.dequeue(4, timeout=5.0)] == [b"b"]
    monkeypatch.undo()
    assert len(writes) == 1 and b"BLPOP" in writes[0]


def test_a_hint_that_came_due_since_the_last_dequeue_is_dequeued_without_a_wait(
    broker: RedisBroker, queue_name: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delay that ended while nobody dequeued is ready now: the next dequeue takes it at once."""
    broker.enqueue(b"a", delay=0.05)
    assert broker.dequeue(4) == []
    redis_client.delete(f"django_q:{{{queue_name}}}:wake")
    time.sleep(0.1)  # past the hint
    writes = _record_writes(monkeypatch)
    assert [d.payload for d in broker.dequeue(4, timeout=5.0)] == [b"a"]
    monkeypatch.undo()
    assert len(writes) == 1 and b"BLPOP" not in writes[0]
