"""A real cluster (sentinel, pusher, workers as processes) started by the test process."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest
from django import db
from django.conf import settings
from django.test import override_settings

from django_q.brokers import close_brokers, get_broker
from django_q.cluster.sentinel import Sentinel
from django_q.conf import Config, get_config

STOP_PATIENCE = 60.0  # seconds a cluster gets to stop before the test fails
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With PostgreSQL or MariaDB as the default database (DQ_DEFAULT_DB, tests/run.sh), leave out the tests
    here that would only do again what the run with SQLite as the default did:

    - those on the Redis broker: the default database holds only their results,
      schedules and dead letters, which their twins on the database broker
      write to the same database, and tests/unit/test_recorder.py too;
    - the stepped scheduler tests (`env`): each names the database it runs on,
      and the run with SQLite runs them on all three already.
    """
    if not os.environ.get("DQ_DEFAULT_DB"):
        return
    kept, again = [], []
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params
        repeat = item.path.is_relative_to(HERE) and params and (params.get("broker_kind") == "redis" or "env" in params)
        (again if repeat else kept).append(item)
    if again:
        config.hook.pytest_deselected(items=again)
        items[:] = kept


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


class Seen(NamedTuple):
    """One of a cluster's processes as its sentinel last saw it."""

    pid: int
    alive: bool
    exitcode: int | None


class View(NamedTuple):
    """The sentinel's processes, as it last published them (see ObservedSentinel)."""

    pusher: Seen | None
    workers: list[Seen | None]
    spares: list[Seen | None]
    known: dict[int, Seen]  # by pid, every process the sentinel started, gone ones included


class ObservedSentinel(Sentinel):
    """A sentinel that writes what it owns to a file whenever that changes, for the test process to read."""

    view_path = ""

    def _publish(self) -> None:
        known = self.__dict__.setdefault("_known", {})
        known.update((proc.pid, proc) for proc in self.processes())

        def seen(proc):
            return None if proc is None else (proc.pid, proc.is_alive(), proc.exitcode)

        view = [seen(self.pusher), [seen(p) for p in self.workers],
                [seen(p) for p in self.spares], [seen(p) for p in known.values()]]
        text = json.dumps(view)
        if text != self.__dict__.get("_published"):
            self._published = text
            with open(self.view_path + ".new", "w") as f:
                f.write(text)
            os.replace(self.view_path + ".new", self.view_path)

    def start(self) -> None:
        super().start()
        self._publish()

    def _replace_dead(self) -> None:  # called on every pass of the guard loop
        super()._replace_dead()
        self._publish()

    def _start_spares(self) -> None:
        super()._start_spares()
        self._publish()

    def _wind_down(self) -> None:
        super()._wind_down()
        self._publish()


def _run_sentinel(sentinel: ObservedSentinel) -> None:
    """The sentinel process: as under qcluster, SIGTERM asks for a graceful stop."""
    handler = logging.StreamHandler()  # the cluster's log lines show in a failed test's captured stderr
    handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(levelname)s %(message)s"))
    logging.getLogger("django_q").addHandler(handler)
    signal.signal(signal.SIGTERM, sentinel.request_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sentinel.identity = replace(sentinel.identity, pid=os.getpid())  # made in the test process
    sentinel.start()
    sentinel.guard()


class Running:
    """A started cluster whose sentinel runs in a process of its own, as under qcluster.

    Not in a thread of the test process: that thread would fork replacement
    workers while the test's own thread is inside SQLite, and a child forked
    at such a moment inherits SQLite's locks held and hangs on its first query.
    `sentinel` is the test process's copy: its config, address, identity and
    notice pipe are those of the one running; `view()` tells its processes.
    """

    def __init__(self, config: Config, folder: str) -> None:
        self.sentinel = ObservedSentinel(config)
        self.sentinel.view_path = os.path.join(folder, f"sentinel-{self.sentinel.identity.id}.json")
        db.connections.close_all()  # the sentinel process must not share this process's database sockets
        self.process = multiprocessing.get_context("fork").Process(
            target=_run_sentinel, args=(self.sentinel,), name="django_q-sentinel"
        )
        self.process.start()
        self.pid = self.process.pid
        self.stopped = False
        wait_until(lambda: os.path.exists(self.sentinel.view_path) or not self.process.is_alive())
        assert self.process.is_alive(), f"the sentinel exited with code {self.process.exitcode}"

    def view(self) -> View:
        with open(self.sentinel.view_path) as f:
            pusher, workers, spares, known = json.load(f)

        def seen(item):
            return None if item is None else Seen(*item)

        return View(seen(pusher), [seen(w) for w in workers], [seen(s) for s in spares],
                    {item[0]: Seen(*item) for item in known})

    def stop(self) -> None:
        """Stop the cluster as SIGTERM does; kill what is left of it after STOP_PATIENCE and fail."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGTERM)
        self.process.join(STOP_PATIENCE)
        stuck = self.process.is_alive()
        if stuck:
            try:
                for proc in psutil.Process(self.pid).children(recursive=True):
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
            self.process.kill()
            self.process.join(5)
        for fd in (self.sentinel.notice_r, self.sentinel.notice_w):
            os.close(fd)
        shutil.rmtree(self.sentinel.dir, ignore_errors=True)
        assert not stuck, "cluster did not stop in time"


@pytest.fixture
def cluster(q_cluster, tmp_path) -> Iterator[Callable[..., Running]]:
    """Start a cluster with the test's Q_CLUSTER (plus overrides); every one started is stopped after."""
    started: list[Running] = []

    def start(**overrides) -> Running:
        running = Running(replace(get_config(), **overrides), str(tmp_path))
        started.append(running)
        return running

    yield start
    for running in started:
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
