"""Redis going away under a running cluster: a restart, and a Sentinel failover to a replica.

Each test runs Redis servers of its own on free ports, so that killing them
disturbs nothing else; the tasks count their runs on the shared test Redis.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from .test_crashes import enqueue_counted, runs, wait_runs
from .test_qcluster import Project, stop

pytestmark = [
    pytest.mark.slow,
    pytest.mark.faults,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary"),
]

TASKS = 400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServers:
    """redis-server processes started by one test, all killed at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, port: int, *args: str, sentinel_conf: str | None = None) -> redis.Redis:
        workdir = self.tmp / str(port)
        workdir.mkdir(exist_ok=True)
        if sentinel_conf is not None:
            conf = workdir / "sentinel.conf"
            conf.write_text(sentinel_conf)
            cmd = ["redis-server", str(conf), "--sentinel", "--port", str(port), "--dir", str(workdir)]
        else:
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                   "--save", "", *args]
        self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port, socket_timeout=2)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail(f"redis-server on port {port} did not start")

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)

    def stop_all(self) -> None:
        for port in list(self.procs):
            self.kill(port)


@pytest.fixture
def servers(tmp_path):
    servers = RedisServers(tmp_path)
    yield servers
    servers.stop_all()


def project_on(tmp_path: Path, redis_setting: str | dict) -> Project:
    project = Project(tmp_path, None)
    project.env["DQ_ACCEPT_RETRY"] = "5"
    project.env["DQ_ACCEPT_REDIS_JSON"] = json.dumps(redis_setting)
    assert project.run("-m", "django", "migrate", "-v", "0").returncode == 0
    return project


def test_redis_restart_mid_drain_loses_nothing(tmp_path, servers, counters):
    client, prefix = counters
    port = free_port()
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    servers.start(port, *aof)
    project = project_on(tmp_path, f"redis://127.0.0.1:{port}/0")
    try:
        enqueue_counted(project, prefix, TASKS)
        cluster = project.qcluster()
        wait_runs(client, prefix, TASKS, TASKS * 3 // 10, timeout=60)
        servers.kill(port)  # SIGKILL: the append-only file is all that survives
        assert runs(client, prefix, TASKS).count(0) > 0  # the restart comes mid-drain
        time.sleep(2)
        servers.start(port, *aof)
        seen = wait_runs(client, prefix, TASKS, TASKS, timeout=90)
        assert min(seen) >= 1
        assert cluster.poll() is None, "the cluster must ride out the outage, not exit"
        out = stop(cluster, signal.SIGTERM)
        assert cluster.returncode == 0, out
        errors = [line for line in out.splitlines() if " ERROR " in line]
        # Logged once per outage and process, not once per retry.
        assert 1 <= len(errors) <= 6, "\n".join(errors)
    finally:
        project.kill_all()


def test_sentinel_failover_mid_drain_loses_nothing(tmp_path, servers, counters):
    client, prefix = counters
    primary, replica, sentinel = free_port(), free_port(), free_port()
    servers.start(primary)
    replica_client = servers.start(replica, "--replicaof", "127.0.0.1", str(primary))
    servers.start(sentinel, sentinel_conf=(
        f"sentinel monitor dq 127.0.0.1 {primary} 1\n"
        "sentinel down-after-milliseconds dq 1000\n"
        "sentinel failover-timeout dq 5000\n"
    ))
    sentinel_client = redis.Redis(port=sentinel, decode_responses=True)
    deadline = time.monotonic() + 30
    while not sentinel_client.sentinel_slaves("dq"):
        assert time.monotonic() < deadline, "sentinel never saw the replica"
        time.sleep(0.2)
    project = project_on(tmp_path, {"sentinels": [["127.0.0.1", sentinel]], "service_name": "dq"})
    try:
        enqueue_counted(project, prefix, TASKS)
        deadline = time.monotonic() + 30
        while replica_client.dbsize() == 0:
            assert time.monotonic() < deadline, "replica never synced"
            time.sleep(0.1)
        time.sleep(0.5)
        cluster = project.qcluster()
        wait_runs(client, prefix, TASKS, TASKS * 3 // 10, timeout=60)
        servers.kill(primary)
        assert runs(client, prefix, TASKS).count(0) > 0  # the failover comes mid-drain
        seen = wait_runs(client, prefix, TASKS, TASKS, timeout=120)
        assert min(seen) >= 1
        assert sentinel_client.sentinel_get_master_addr_by_name("dq")[1] == replica
        assert cluster.poll() is None
        assert runs(client, prefix, TASKS).count(0) == 0
    finally:
        project.kill_all()
