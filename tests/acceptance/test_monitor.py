"""`qinfo` and `qmonitor` as a user runs them, against a `qcluster` running in a subprocess."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from ..integration.conftest import wait_until
from .test_qcluster import ROOT, Project, stop

pytestmark = pytest.mark.slow

TTL = 6.0  # django_q.status.TTL


def qinfo(project: Project, *args: str) -> dict[str, str]:
    done = project.run("-m", "django", "qinfo", *args)
    assert done.returncode == 0, done.stderr
    return dict(re.match(r"^([a-z ]+):\s+(.*)$", line).groups() for line in done.stdout.splitlines())


def ids(project: Project) -> list[str]:
    done = project.run("-m", "django", "qinfo", "--ids")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def tables(text: str) -> list[tuple[str, list[list[str]]]]:
    """The plain tables qmonitor prints without a terminal: (title, [header, *rows]) of each, in order.

    A table is a title line, a header line and its rows, cells separated by two
    spaces or more; tables and lines of text are separated by blank lines.
    """
    found = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.splitlines()
        if len(lines) >= 2:
            found.append((lines[0], [re.split(r" {2,}", line.strip()) for line in lines[1:]]))
    return found


def monitor_rows(project: Project, *args: str) -> list[list[str]]:
    """The cells of every table line (headers included) `qmonitor --run-once` prints into a pipe."""
    done = project.run("-m", "django", "qmonitor", "--run-once", *args)
    assert done.returncode == 0, done.stderr
    return [row for _, rows in tables(done.stdout) for row in rows]


def test_qinfo_and_qmonitor_show_a_running_cluster(project, tmp_path):
    assert qinfo(project)["clusters"] == "0"
    assert "No cluster" in project.run("-m", "django", "qmonitor", "--run-once").stdout
    project.drive("enqueue", "tests.app.tasks.add", "5", "quick", "[1, 2]")
    project.drive("enqueue", "tests.app.tasks.fail", "1", "bad")
    cluster = project.qcluster()
    project.wait_for("quick", 5)
    project.wait_for("bad", 1)
    # The two slow tasks run until the test is done looking: each look is a command's start-up.
    release = tmp_path / "release"
    project.drive("enqueue", "tests.app.context_tasks.report_then_wait", "2", "slow",
                  json.dumps([str(release), 3, 10, "copying"]))

    def busy():
        info = qinfo(project)
        return info if info["running"] == "2" and info["clusters"] == "1" else None

    info = wait_until(busy)
    assert info["queue"] == project.env["DQ_ACCEPT_QUEUE"]
    assert info["broker"] == ("redis" if "DQ_ACCEPT_REDIS" in project.env else "orm")
    assert (info["workers"], info["successes"], info["failures"]) == ("2", "5", "1")
    assert (info["queued"], info["schedules"], info["dead letters"]) == ("0", "0", "0")
    assert re.fullmatch(r"\d+\.\d{3} s \(last 6 tasks\)", info["mean run time"])

    (cluster_id,) = ids(project)
    assert re.fullmatch(r"[0-9a-f]{32}", cluster_id)

    def reported():  # progress is published with the status, every PERIOD: a look may come before it
        rows = monitor_rows(project)
        cells = [r[9] for r in rows[3:] if r[0] == cluster_id[:8] and len(r) > 9]
        return rows if cells == ["3/10 (30%) copying"] * 2 else None

    rows = wait_until(reported)
    header, row, workers_header = rows[0], rows[1], rows[2]
    assert header == ["Cluster", "Host", "PID", "State", "Workers", "Busy", "Queued", "Done", "Failed", "Tasks/s",
                      "RSS", "Up time"]
    assert row[0] == cluster_id and row[2] == str(cluster.pid)
    assert row[3:9] == ["running", "2", "2", "0", "5", "1"]
    assert float(row[9]) >= 0 and re.fullmatch(r"\d+\.\d MiB", row[10])
    assert re.fullmatch(r"\d\d:\d\d:\d\d", row[11])
    assert workers_header == ["Cluster", "Worker", "PID", "RSS", "CPU", "Tasks", "Task", "Task id", "Running for",
                              "Progress"]
    workers = [r for r in rows[3:] if r[0] == cluster_id[:8]]
    assert sorted(r[1] for r in workers) == ["0", "1"]
    assert all(r[7] and r[6] != "idle" for r in workers)  # each runs a slow task
    # CPU is "-" at a worker's first look
    assert all(re.fullmatch(r"\d+\.\d MiB", r[3]) and re.fullmatch(r"\d+%|-", r[4]) for r in workers)
    assert sum(int(r[5]) for r in workers) == 6  # the tasks they finished: 5 quick ones and the failure

    memory = monitor_rows(project, "--memory")
    assert memory[0] == ["Cluster", "Host", "Worker", "PID", "RSS", "RSS KiB", "Of max_rss", "CPU", "Tasks"]
    by_worker = [r for r in memory[1:] if r[2] != "all"]
    assert sorted(r[3] for r in by_worker) == sorted(r[2] for r in workers)
    sizes = [int(r[5]) for r in by_worker]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) > 1000  # KiB, largest first
    (total,) = [r for r in memory[1:] if r[2] == "all"]
    assert int(total[5]) == sum(sizes)

    release.touch()
    out = stop(cluster, signal.SIGTERM)
    assert cluster.returncode == 0, out
    assert ids(project) == []  # a graceful stop removes the entry at once
    assert qinfo(project)["clusters"] == "0"


def test_a_killed_cluster_disappears_within_seconds(project):
    cluster = project.qcluster()
    (cluster_id,) = wait_until(lambda: ids(project))
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(10)
    killed = time.monotonic()
    # Each look takes a `manage.py qinfo` start-up (a second or more on a busy machine).
    wait_until(lambda: ids(project) == [], timeout=TTL + 15)
    assert time.monotonic() - killed <= TTL + 15


def test_qinfo_config_masks_passwords(project):
    project.env["DQ_ACCEPT_REDIS"] = "redis://user:s3cret@127.0.0.1:6379/14"
    done = project.run("-m", "django", "qinfo", "--config")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert "s3cret" not in done.stdout
    assert config["redis"] == "redis://user:***@127.0.0.1:6379/14"
    assert config["name"] == project.env["DQ_ACCEPT_QUEUE"] and config["workers"] == 2
    assert json.loads(project.run("-m", "django", "qinfo", "--config", "-n", "other").stdout)["name"] == "other"


def test_qmonitor_on_a_terminal_refreshes_and_quits_on_q(project):
    cluster = project.qcluster()
    (cluster_id,) = wait_until(lambda: ids(project))
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "django", "qmonitor"], env={**project.env, "COLUMNS": "200"},
                            cwd=ROOT, stdin=child, stdout=child, stderr=child, start_new_session=True)
    os.close(child)
    try:
        # Drawn, then redrawn; the cluster shows as starting until every worker connected.
        read_until(main, lambda text: text.count("q quits") >= 2 and cluster_id in text and "running" in text,
                   timeout=60)
        os.write(main, b"q")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
        stop(cluster, signal.SIGTERM)


def test_qmonitor_without_a_terminal_prints_plain_tables_every_interval(project):
    cluster = project.qcluster()
    (cluster_id,) = wait_until(lambda: ids(project))
    wait_until(lambda: monitor_rows(project)[1][3] == "running")  # every worker connected
    proc = subprocess.Popen([sys.executable, "-m", "django", "qmonitor", "--interval", "0.5"], env=project.env,
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        text = read_until(proc.stdout.fileno(), lambda t: t.count("\nWorkers\n") >= 3 and t.endswith("\n\n"),
                          timeout=60)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait(5)
        stop(cluster, signal.SIGTERM)
    found = tables(text)
    clusters = [rows for title, rows in found if title.startswith("Django Q clusters of queue")]
    workers = [rows for title, rows in found if title == "Workers"]
    assert len(clusters) >= 3 and len(workers) >= 3  # one set per interval
    for rows in clusters:
        assert rows[0][:4] == ["Cluster", "Host", "PID", "State"] and rows[1][0] == cluster_id
        assert len(rows[1]) == len(rows[0])  # every cell there, empty ones as "-"
    assert all(len(rows) == 3 and all(len(r) == len(rows[0]) for r in rows) for rows in workers)
    assert all(r[6] == "idle" and r[7:] == ["-", "-", "-"] for r in workers[-1][1:])


def test_qmonitor_without_a_terminal_runs_until_ctrl_c(project):
    # A test run started in the background (`make test &`) ignores SIGINT, and
    # so would the child, which then never sees the Ctrl-C this test sends.
    proc = subprocess.Popen([sys.executable, "-m", "django", "qmonitor"], env=project.env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Ctrl-C once it has drawn, and is waiting to draw again: not while it starts.
        first = read_until(proc.stdout.fileno(), lambda text: "No cluster" in text, timeout=60)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait(5)
    assert proc.returncode == 0, err
    assert "No cluster" in first and "Traceback" not in err


def read_until(fd: int, done, timeout: float) -> str:
    """Read a pty until `done(text so far)`; fail after `timeout` seconds."""
    text = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                text += os.read(fd, 65536).decode(errors="replace")
            except OSError:
                break
            if done(text):
                return text
    pytest.fail(f"terminal output incomplete after {timeout}s:\n{text[-2000:]}")
