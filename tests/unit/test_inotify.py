"""django_q.brokers.inotify: writes to the watched names of a folder wake the wait, others do not."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from django_q.brokers import inotify

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def test_a_write_to_a_watched_name_wakes_the_wait_and_others_do_not(tmp_path: Path) -> None:
    files = inotify.watch(str(tmp_path), ["db", "db-wal"])
    assert files is not None
    try:
        (tmp_path / "other").write_bytes(b"x")
        assert files.wait(0.05) is False
        (tmp_path / "db-wal").write_bytes(b"x")  # made after the watch: the folder is watched, not the file
        assert files.wait(0.05) is True
        assert files.wait(0.05) is False  # the events were consumed
        timer = threading.Timer(0.2, (tmp_path / "db").write_bytes, [b"y"])
        timer.start()
        try:
            assert files.wait(20.0) is True
        finally:
            timer.cancel()
    finally:
        files.close()
    assert files.fd == -1


def test_a_folder_that_cannot_be_watched_gives_none(tmp_path: Path) -> None:
    assert inotify.watch(str(tmp_path / "missing"), ["db"]) is None
    assert os.path.isdir(tmp_path)
