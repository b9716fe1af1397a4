"""The start path: the order in which the sentinel starts the processes, and how they reach the pusher
(no process is started here)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from multiprocessing.connection import Connection
from typing import Any

import pytest

from django_q.cluster import process, pusher
from django_q.cluster.messages import Hello, Role
from django_q.cluster.sentinel import Sentinel
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
    """While a pusher that died is being replaced there is no socket; no longer pause is waited out after the
    new one is there (a growing pause did: up to twice the wait)."""
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


class _Stop(Exception):
    pass


def test_the_pusher_process_binds_its_socket_before_anything_else(tmp_path: Any, monkeypatch: Any) -> None:
    """The workers are forked right after the pusher: they must find its socket there, not pause for it."""
    address = str(tmp_path / "pusher.sock")
    bound: list[socket.socket] = []
    seen: list[bool] = []

    def listen(path: str) -> socket.socket:
        bound.append(real_listen(path))
        return bound[-1]

    def setup(*args: Any) -> None:
        seen.append(os.path.exists(address))
        raise _Stop

    real_listen = process.listen
    monkeypatch.setattr(process, "listen", listen)
    monkeypatch.setattr(process, "setup", setup)
    try:
        with pytest.raises(_Stop):
            pusher.main(address, b"key", build_config())
    finally:
        for sock in bound:
            sock.close()
    assert seen == [True]


def test_a_worker_that_connects_before_the_pusher_accepts_waits_for_it_without_pausing(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """Bound first, the socket keeps a connection made before the pusher started accepting: the handshake
    follows as soon as it does, with no try lost and no CONNECT_PAUSE waited out."""
    address = str(tmp_path / "pusher.sock")
    pauses: list[float] = []
    monkeypatch.setattr(process.time, "sleep", pauses.append)
    arrived: list[tuple[Connection, Hello]] = []
    introduced = threading.Event()
    got: list[Connection | None] = []
    sock = process.listen(address)
    hello = Hello(Role.WORKER, os.getpid(), 0)
    client = threading.Thread(target=lambda: got.append(process.connect(address, b"key", hello)), daemon=True)
    client.start()
    listener = None
    try:
        client.join(0.2)
        assert client.is_alive() and not got  # connected, waiting for the challenge
        listener = process.Listener(sock, b"key", lambda conn, said: (arrived.append((conn, said)), introduced.set()))
        client.join(process.HANDSHAKE)
        assert not client.is_alive()
        introduced.wait(process.HANDSHAKE)
    finally:
        if listener is not None:
            listener.close()
        else:
            sock.close()
        for conn in [*got, *(conn for conn, _ in arrived)]:
            if conn is not None:
                conn.close()
    assert got[0] is not None and [said for _, said in arrived] == [hello]
    assert pauses == []
