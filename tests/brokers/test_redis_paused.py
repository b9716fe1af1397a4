"""A Redis that accepts connections but does not answer: a throwaway redis-server that the test CLIENT PAUSEs."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from django_q.brokers import close_brokers, get_broker
from django_q.exceptions import BrokerConnectionError
from django_q.tasks import async_task

START_WAIT = 10.0  # seconds a fresh redis-server has to answer PING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def paused_redis(tmp_path) -> Iterator[tuple[str, Callable[[float], float]]]:
    """A redis-server of this test's own, and pause(seconds), which pauses every client and returns when it ends."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    admin = redis.Redis(port=port, socket_timeout=2)
    try:
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)

        def pause(seconds: float) -> float:
            admin.execute_command("CLIENT", "PAUSE", round(seconds * 1000), "ALL")
            return time.monotonic() + seconds

        yield f"redis://127.0.0.1:{port}/0", pause
    finally:
        admin.close()
        close_brokers()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()) + 0.2)


@pytest.mark.slow
def test_async_task_raises_instead_of_waiting_for_a_paused_redis(paused_redis, settings):
    url, pause = paused_redis
    settings.Q_CLUSTER = {"name": "paused", "redis": url, "enqueue_timeout": 0.5}
    async_task("math.copysign", 1, -1)  # a warm connection, as in a web process that enqueued before
    ends = pause(4)
    with pytest.raises(BrokerConnectionError):
        async_task("math.copysign", 2, -2)
    until(ends)
    assert get_broker().size() == 1  # the refused task was not sent after all
    async_task("math.copysign", 3, -3)  # and the next one goes through
    assert get_broker().size() == 2


@pytest.mark.slow
@pytest.mark.parametrize("setting", [
    lambda url: url,
    lambda url: f"{url}?socket_timeout=60&socket_connect_timeout=60",  # the user's long timeouts do not lift the bound
    lambda url: {"host": "127.0.0.1", "port": int(url.split(":")[2].split("/")[0]), "socket_timeout": 60},
], ids=["url", "url-with-timeouts", "dict-with-timeout"])
def test_a_new_connection_to_a_paused_redis_fails_too(paused_redis, settings, setting):
    url, pause = paused_redis
    settings.Q_CLUSTER = {"name": "paused", "redis": setting(url), "enqueue_timeout": 0.5}
    ends = pause(4)
    with pytest.raises(BrokerConnectionError):
        async_task("math.copysign", 2, -2)
    until(ends)
    assert get_broker().size() == 0


@pytest.mark.slow
def test_the_clusters_own_calls_wait_out_a_short_pause(paused_redis, settings):
    url, pause = paused_redis
    settings.Q_CLUSTER = {"name": "paused", "redis": url, "enqueue_timeout": 0.3}
    broker = get_broker()
    async_task("math.copysign", 1, -1)
    pause(1.5)
    assert broker.size() == 1  # the long-timeout client: no error, an answer once the pause ended
    assert [d.id for d in broker.dequeue(count=5, timeout=0)]
