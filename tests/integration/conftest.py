"""A real cluster (sentinel, pusher, monitor, workers as processes) started in the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from django.conf import settings
from django.test import override_settings

from django_q.brokers import close_brokers, get_broker
from django_q.cluster.sentinel import Sentinel
from django_q.conf import get_config

STOP_PATIENCE = 60.0  # seconds a cluster gets to stop before the test fails


@pytest.fixture(params=["orm", "redis"])
def broker_kind(request) -> str:
    return request.param


@pytest.fixture
def q_cluster(broker_kind, queue_name, transactional_db) -> Iterator[dict]:
    """Q_CLUSTER for this test: its own queue on the chosen broker; the queue is purged after."""
    conf = {"name": queue_name, "workers": 2, "retry": 5, "poll": 0.02}
    if broker_kind == "redis":
        conf["redis"] = settings.REDIS_URL
    with override_settings(Q_CLUSTER=conf):
        yield conf
        get_broker().purge()
        close_brokers()


class Running:
    """A started cluster whose guard loop runs in a thread."""

    def __init__(self, sentinel: Sentinel) -> None:
        self.sentinel = sentinel
        self.thread = threading.Thread(target=sentinel.guard, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.sentinel.request_stop()
        self.thread.join(STOP_PATIENCE)
        alive = self.thread.is_alive()
        for proc in self.sentinel.processes():
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        assert not alive, "cluster did not stop in time"


@pytest.fixture
def cluster(q_cluster) -> Iterator[Callable[..., Running]]:
    """Start a cluster with the test's Q_CLUSTER (plus overrides); every one started is stopped after."""
    started: list[Running] = []

    def start(**overrides) -> Running:
        sentinel = Sentinel(replace(get_config(), **overrides))
        sentinel.start()
        running = Running(sentinel)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def wait_until(check: Callable[[], object], timeout: float = 30.0, pause: float = 0.05) -> object:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(pause)
    pytest.fail(f"condition not met within {timeout}s: {getattr(check, '__name__', check)}")
