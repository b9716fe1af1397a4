"""`manage.py qcluster` as a user runs it: a subprocess, stopped by real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class Project:
    """A throwaway project database plus helpers to run commands against it."""

    def __init__(self, tmp: Path, redis: str | None) -> None:
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.acceptance.settings",
            "DQ_ACCEPT_DB": str(tmp / "db.sqlite3"),
            "DQ_ACCEPT_QUEUE": f"a{uuid.uuid4().hex[:10]}",
            "PYTHONPATH": str(ROOT),
        }
        if redis:
            self.env["DQ_ACCEPT_REDIS"] = redis
        self.original_env = dict(self.env)
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )

    def drive(self, *args: str) -> object:
        done = self.run("-m", "tests.acceptance.drive", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def qcluster(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "qcluster", *args],
            env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def wait_for(self, group: str, count: int, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.drive("count", group)
            if counts["success"] + counts["failure"] >= count:
                return counts
            time.sleep(0.2)
        pytest.fail(f"{count} results of group {group} not stored within {timeout}s: {counts}")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def stop(proc: subprocess.Popen, sig: int, timeout: float = 60) -> str:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"qcluster did not stop within {timeout}s after signal {sig}:\n{out}")
    return out


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_runs_tasks_and_stops_on_sigterm(project, method):
    project.drive("enqueue", "math.copysign", "20", "seed", "[2, -2]")
    cluster = project.qcluster("--start-method", method)
    counts = project.wait_for("seed", 20)
    assert counts == {"success": 20, "failure": 0, "queued": 0}
    assert project.drive("results", "seed") == [-2.0] * 20
    out = stop(cluster, signal.SIGTERM)
    assert cluster.returncode == 0, out
    assert "stopped" in out


def test_sigint_lets_running_tasks_finish(project, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    cluster = project.qcluster()
    # 4 s each: the signal must come while both still run, even if this loop is kept off the CPU for a while.
    project.drive("enqueue", "tests.app.tasks.touch_then_sleep", "2", "slow", json.dumps([str(started), 4.0]))
    deadline = time.monotonic() + 60
    while len(list(started.iterdir())) < 2:  # both running (two workers)
        assert time.monotonic() < deadline, "the two tasks did not start within 60 s"
        time.sleep(0.05)
    signalled = time.time()
    out = stop(cluster, signal.SIGINT)
    assert cluster.returncode == 0, out
    ended = project.drive("results", "slow")
    assert len(ended) == 2 and all(at > signalled for at in ended), (signalled, ended)


def test_run_once_drains_and_exits(project):
    project.drive("enqueue", "tests.app.tasks.add", "30", "once", "[1, 2]")
    done = project.run("-m", "django", "qcluster", "--run-once", timeout=90)
    assert done.returncode == 0, done.stderr
    assert project.drive("count", "once") == {"success": 30, "failure": 0, "queued": 0}


def test_bad_setting_is_one_line(project):
    project.env["DQ_ACCEPT_QUEUE"] = "bad:name"
    done = project.run("-m", "django", "qcluster", timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Q_CLUSTER['name']" in lines[0], done.stderr


def test_unreachable_broker_is_one_line(project):
    project.env["DQ_ACCEPT_REDIS"] = "redis://127.0.0.1:1/0"
    done = project.run("-m", "django", "qcluster", timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "redis" in lines[0], done.stderr


def test_sqlite_drain_has_no_lock_errors(tmp_path):
    """10,000 tasks, 2 workers, the default SQLite database: every result saved, no 'database is locked'."""
    project = Project(tmp_path, None)
    project.env["DQ_ACCEPT_SAVE_LIMIT"] = "0"
    try:
        assert project.run("-m", "django", "migrate", "-v", "0").returncode == 0
        assert project.drive("enqueue-many", "tests.app.tasks.add", "10000", "load", "[1, 1]") == 10_000
        done = project.run("-m", "django", "qcluster", "--run-once", timeout=300)
        assert done.returncode == 0, done.stderr
        assert "locked" not in done.stderr.lower(), done.stderr
        assert project.drive("count", "load") == {"success": 10_000, "failure": 0, "queued": 0}
    finally:
        project.kill_all()
