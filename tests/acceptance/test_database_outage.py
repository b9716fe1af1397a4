"""PostgreSQL gone for 30 s under a running cluster on the database broker.

The test runs a PostgreSQL server of its own (initdb in a temporary folder),
so that stopping it disturbs nothing else.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .test_crashes import enqueue_counted, runs, wait_runs
from .test_qcluster import Project, stop
from .test_redis_faults import free_port

pytestmark = [pytest.mark.slow, pytest.mark.faults]

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
TASKS = 300
OUTAGE = float(os.environ.get("DQ_OUTAGE_SECONDS", "30"))


class Postgres:
    """A throwaway PostgreSQL server run as the postgres user."""

    def __init__(self) -> None:
        # Outside pytest's tmp_path: its parents are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="dq-pg-"))
        self.data = self.root / "pgdata"
        self.data.mkdir()
        shutil.chown(self.root, "postgres")
        shutil.chown(self.data, "postgres")
        self.port = free_port()
        self.pg(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres"], timeout=120)

    def pg(self, args: list[str], timeout: float = 60) -> None:
        cmd = ["runuser", "-u", "postgres", "--", f"{BIN[-1]}/{args[0]}", *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg(["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w", "start"])

    def crash(self) -> None:
        self.pg(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"])

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{BIN[-1]}/pg_ctl", "-D", str(self.data), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.mark.skipif(not BIN or os.geteuid() != 0, reason="needs PostgreSQL's server binaries and root")
def test_database_gone_30s_mid_drain_loses_nothing(tmp_path, counters):
    client, prefix = counters
    server = Postgres()
    server.start()
    project = Project(tmp_path, None)
    project.env.update(DQ_ACCEPT_PG_PORT=str(server.port), DQ_ACCEPT_RETRY="5", DQ_ACCEPT_SAVE_LIMIT="0")
    try:
        assert project.run("-m", "django", "migrate", "-v", "0").returncode == 0
        enqueue_counted(project, prefix, TASKS)
        cluster = project.qcluster()
        wait_runs(client, prefix, TASKS, TASKS * 3 // 10, timeout=60)
        server.crash()
        assert runs(client, prefix, TASKS).count(0) > 0  # the outage comes mid-drain
        time.sleep(1)
        refused = project.run("-m", "tests.acceptance.drive", "enqueue", "math.floor", "1", "late", "[1.5]")
        assert refused.returncode != 0 and "BrokerConnectionError" in refused.stderr
        time.sleep(OUTAGE)
        assert cluster.poll() is None, "the cluster keeps its processes through the outage"
        server.start()
        wait_runs(client, prefix, TASKS, TASKS, timeout=120)
        counts = project.wait_for("crash", TASKS, timeout=60)
        assert counts == {"success": TASKS, "failure": 0, "queued": 0}
        out = stop(cluster, signal.SIGTERM)
        assert cluster.returncode == 0, out
        errors = [line for line in out.splitlines() if " ERROR " in line]
        assert 1 <= len(errors) <= 8, "logged once per outage and process, not per attempt:\n" + "\n".join(errors)
    finally:
        project.kill_all()
        server.stop()
