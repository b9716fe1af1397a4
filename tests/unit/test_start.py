"""The start path: the order in which the sentinel starts the processes, and how they reach the pusher
(no process is started here)."""

from __future__ import annotations

import gc
import os
import shutil
from typing import Any

from django_q.cluster import process
from django_q.cluster.messages import Hello, Role
from django_q.cluster.sentinel import Sentinel, pause_collector, resume_collector
from django_q.conf import build_config


def test_the_sentinel_starts_the_pusher_then_the_workers_and_nothing_else(settings: Any) -> None:
    """The pusher saves results and runs the scheduler itself: a cluster of 2 workers is 4 processes."""
    settings.Q_CLUSTER = {"name": "order", "workers": 2}
    sentinel = Sentinel(build_config(), start_method="fork")
    started: list[str] = []

    def spawn(name: str, role: str, *args: Any) -> None:
        started.append(name)

    sentinel._preload = lambda: None  # type: ignore[method-assign]
    sentinel._spawn = spawn  # type: ignore[method-assign,assignment]
    try:
        sentinel.start()
    finally:
        shutil.rmtree(sentinel.dir, ignore_errors=True)
        os.close(sentinel.notice_r)
        os.close(sentinel.notice_w)
    assert started == ["pusher", "worker-0", "worker-1"]


class _Conn:
    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, msg: object) -> None:
        self.sent.append(msg)


def test_a_process_waiting_for_the_pusher_s_socket_tries_again_every_connect_pause(monkeypatch: Any) -> None:
    """At start the socket comes some tens of milliseconds after the workers; no longer pause is waited out
    after it is there (a growing pause did: up to twice the wait)."""
    conn = _Conn()
    answers = iter([None] * 6 + [conn])
    pauses: list[float] = []
    monkeypatch.setattr(process, "_client", lambda address, authkey: next(answers))
    monkeypatch.setattr(process.time, "sleep", pauses.append)
    hello = Hello(Role.WORKER, os.getpid(), 0)
    assert process.connect("/nowhere", b"", hello) is conn
    assert conn.sent == [hello]
    assert pauses == [process.CONNECT_PAUSE] * 6
    assert process.CONNECT_PAUSE <= 0.01


class _Process:
    """Stands for a multiprocessing Process: records whether the collector was on when it was started."""

    collecting: list[bool] = []

    def __init__(self, **_: Any) -> None:
        pass

    def start(self) -> None:
        _Process.collecting.append(gc.isenabled())


def test_qcluster_pauses_the_garbage_collector_until_its_first_fork_and_every_child_collects(
    settings: Any, monkeypatch: Any
) -> None:
    settings.Q_CLUSTER = {"name": "collector", "workers": 2}
    sentinel = Sentinel(build_config(), start_method="fork")
    monkeypatch.setattr(sentinel.ctx, "Process", _Process)  # the fork context is shared: put back after the test
    _Process.collecting = []
    try:
        pause_collector()
        assert not gc.isenabled()
        sentinel._spawn("pusher", "pusher")
        sentinel._spawn("worker-0", "worker")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()
        shutil.rmtree(sentinel.dir, ignore_errors=True)
        os.close(sentinel.notice_r)
        os.close(sentinel.notice_w)
    assert _Process.collecting == [True, True]


def test_a_collector_the_project_turned_off_stays_off() -> None:
    gc.disable()
    try:
        pause_collector()
        resume_collector()
        assert not gc.isenabled()
    finally:
        gc.enable()
    pause_collector()
    resume_collector()
    resume_collector()
    assert gc.isenabled()
