"""What the contract does not say about the Redis broker: key layout, client settings, wake-up latency."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from django_q.brokers.redis import KEY_NAMES, RedisBroker
from django_q.brokers.redis_lua import WAKE_CAP


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


def test_id_is_the_ready_score(broker: RedisBroker, queue_name: str, redis_client: redis.Redis) -> None:
    low = broker.enqueue(b"low", priority=-1)
    high = broker.enqueue(b"high", priority=1)
    ready = f"django_q:{{{queue_name}}}:ready"
    assert redis_client.zscore(ready, low) == int(low)
    assert int(high) < int(low)


def test_the_wake_list_holds_a_token_per_enqueue_up_to_its_cap(
    broker: RedisBroker, queue_name: str, redis_client: redis.Redis
) -> None:
    wake = f"django_q:{{{queue_name}}}:wake"
    for payload in (b"a", b"b", b"c"):
        broker.enqueue(payload)
    assert redis_client.llen(wake) == 3
    for _ in range(WAKE_CAP + 5):
        broker.enqueue(b"x")
    assert redis_client.llen(wake) == WAKE_CAP
    broker.enqueue_many([b"y"] * 10)
    assert redis_client.llen(wake) == WAKE_CAP


def test_dict_setting_and_decoding_client_still_carry_bytes(queue_name: str, redis_kwargs: dict[str, Any]) -> None:
    broker = RedisBroker(queue_name, 30.0, {**redis_kwargs, "decode_responses": True})
    try:
        broker.enqueue(b"\xff\x00")
        (delivery,) = broker.dequeue()
        assert delivery.payload == b"\xff\x00"
    finally:
        broker.purge()
        broker.close()


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


def test_a_woken_dequeue_gets_its_delivery_in_the_write_of_its_wait(
    broker: RedisBroker, queue_name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BLPOP and the next dequeue script go to the server in one write: one round trip from wake-up to delivery.

    With the broker a round trip away, two calls (BLPOP, then the script) made
    every task enqueued to an idle cluster start a round trip later.
    """
    consumer = RedisBroker(queue_name, 30.0, redis_url)
    assert consumer.dequeue(timeout=0.01) == []  # connected, the script loaded: only the calls below count
    writes: list[int] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "consumer":
            writes.append(1)
        return send(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(consumer.dequeue(timeout=10)), name="consumer")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(writes) < 2 and time.monotonic() < deadline:  # the first dequeue found nothing; it waits
            time.sleep(0.01)
        broker.enqueue(b"x")
        thread.join(15)
        assert [d.payload for d in got[0]] == [b"x"]
        assert len(writes) == 2  # the first dequeue; the wait with the dequeue that found it
    finally:
        thread.join(15)
        consumer.close()
