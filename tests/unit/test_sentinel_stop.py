"""The sentinel's graceful stop against a pusher that is still starting (a child process stands in for it)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from django_q.cluster import sentinel as sentinel_module
from django_q.cluster.channels import GRACEFUL_STOP
from django_q.cluster.sentinel import Sentinel
from django_q.conf import build_config

PATIENCE = 30.0  # seconds any step here may take before the test fails


def _starting_pusher(conn: Connection) -> None:
    """As a pusher process: GRACEFUL_STOP ignored (process.setup) until its start ends, then it stops on it."""
    signal.signal(GRACEFUL_STOP, signal.SIG_IGN)
    conn.send("ignoring")
    conn.recv()  # the test saw the sentinel signal it
    signal.signal(GRACEFUL_STOP, lambda *_: os._exit(0))
    conn.send("handling")
    conn.poll(PATIENCE)  # a lost stop: the test kills it


def test_a_stop_the_pusher_missed_while_it_started_is_sent_again(settings: Any, monkeypatch: Any) -> None:
    """A SIGTERM right after the cluster started reaches the pusher before its handler: the sentinel signals
    it again until it is gone, instead of waiting for it forever."""
    settings.Q_CLUSTER = {"name": "restop", "workers": 1}
    sentinel = Sentinel(build_config(), start_method="fork")
    sent: list[int] = []
    signalled = threading.Event()

    def record(proc: Any, signum: int) -> None:
        real_signal(proc, signum)
        sent.append(signum)
        signalled.set()

    real_signal = sentinel_module._signal
    monkeypatch.setattr(sentinel_module, "_signal", record)
    ours, theirs = sentinel.ctx.Pipe()
    pusher = sentinel.pusher = sentinel.ctx.Process(target=_starting_pusher, args=(theirs,))
    pusher.start()
    guard = threading.Thread(target=sentinel.guard, daemon=True)
    try:
        assert ours.poll(PATIENCE) and ours.recv() == "ignoring"
        sentinel.request_stop()
        guard.start()
        assert signalled.wait(PATIENCE)  # sent while the pusher ignored it: lost
        ours.send("go on")
        assert ours.poll(PATIENCE) and ours.recv() == "handling"
        guard.join(PATIENCE)
        assert not guard.is_alive(), "the sentinel waits for a pusher that never heard of the stop"
    finally:
        if pusher.is_alive():
            pusher.kill()  # the guard then sees it gone, and winds down
        if guard.ident is not None:
            guard.join(PATIENCE)  # _wind_down removes the sentinel's folder and closes its pipe
        else:
            shutil.rmtree(sentinel.dir, ignore_errors=True)
            os.close(sentinel.notice_r)
            os.close(sentinel.notice_w)
        pusher.join(PATIENCE)
        for conn in (ours, theirs):
            conn.close()
    assert pusher.exitcode == 0 and sent[:2] == [GRACEFUL_STOP, GRACEFUL_STOP]
