"""Clusters on several "hosts" of this machine, one killed whole: how soon its tasks run elsewhere (W5's recovery).

Each cluster runs in a network namespace of its own (`dq-h1`, `dq-h2`, ...),
joined to this one by a veth pair (10.77.N.2 inside, 10.77.N.1 here). Redis
and PostgreSQL stay where they run, on this namespace's loopback: each host
reaches them through bench/delay_proxy.py listening on its link's far end,
which adds `--delay-ms` to every round trip (this kernel has no netem). Once
the clusters have run `--kill-at` of the tasks, every process in `dq-h1` is
stopped and killed at once, as a host dying; the others drain the rest.
Everything set up (namespaces, links, proxies, clusters, the database) is
taken down on the way out, also after Ctrl-C. Needs root (`ip netns`); takes
the bench lock (bench/lock.py).

    sudo .venv/bin/python bench/hosts.py --clusters 2 --broker redis --tasks 400

Prints: tasks the killed host held (delivered again), the time from the kill
to each one's start on another host (max and median), tasks lost, tasks that
ran twice, and the whole run's time.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress

import lock

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "dq-h"


def sh(*command: str, check: bool = True) -> str:
    return subprocess.run(command, check=check, capture_output=True, text=True).stdout


class Hosts:
    """The namespaces and their links; `close()` removes them (deleting a namespace removes its veth pair)."""

    def __init__(self, count: int, first: int = 1) -> None:
        """Namespaces dq-h<first> ... dq-h<first + count - 1>, each linked over 10.77.<n>.0/24."""
        self.names: list[str] = []
        self.numbers = list(range(first, first + count))
        for n in self.numbers:
            ns, here, there = f"{PREFIX}{n}", f"dq-v{n}", f"dq-v{n}p"
            self.close_one(ns, here)  # left over from a run that was killed
            sh("ip", "netns", "add", ns)
            self.names.append(ns)
            sh("ip", "link", "add", here, "type", "veth", "peer", "name", there)
            sh("ip", "link", "set", there, "netns", ns)
            sh("ip", "addr", "add", f"10.77.{n}.1/24", "dev", here)
            sh("ip", "link", "set", here, "up")
            for step in (["addr", "add", f"10.77.{n}.2/24", "dev", there], ["link", "set", there, "up"],
                         ["link", "set", "lo", "up"]):
                sh("ip", "netns", "exec", ns, "ip", *step)

    @staticmethod
    def close_one(ns: str, link: str) -> None:
        for pid in sh("ip", "netns", "pids", ns, check=False).split():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", link, check=False)

    def kill(self, ns: str) -> None:
        """Stop, then kill, every process of namespace `ns` at once: a host dying."""
        pids = [int(p) for p in sh("ip", "netns", "pids", ns).split()]
        for signum in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def close(self) -> None:
        for n, ns in zip(self.numbers, self.names):
            self.close_one(ns, f"dq-v{n}")


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def starts(folder: str) -> list[tuple[int, str, float]]:
    """(task number, host, epoch) of every start, oldest first."""
    found = []
    for name in os.listdir(folder):
        n, host, at = name.split("-", 2)
        found.append((int(n), host, float(at)))
    return sorted(found, key=lambda s: s[2])


def stop_clusters(clusters: list[subprocess.Popen]) -> None:
    """SIGTERM each cluster's process group, then SIGKILL those not gone within 15 s."""
    for cluster in clusters:
        with suppress(ProcessLookupError):
            os.killpg(cluster.pid, signal.SIGTERM)
    for cluster in clusters:
        try:
            cluster.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(5)


def run(args: argparse.Namespace, stack: ExitStack) -> dict:
    queue = f"hosts{os.getpid()}"
    db_name = f"dq_hosts_bench_{os.getpid()}"
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dq-hosts-"))
    env = {**os.environ, "PYTHONPATH": HERE, "DJANGO_SETTINGS_MODULE": "hosts_settings", "HOSTS_QUEUE": queue,
           "HOSTS_BROKER": args.broker, "HOSTS_PG_NAME": db_name}
    os.environ.update(env)  # this process enqueues and reads results directly, on loopback

    hosts = Hosts(args.clusters)
    stack.callback(hosts.close)
    procs: list[subprocess.Popen] = []

    def stop_all() -> None:
        for proc in procs:
            with suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)

    stack.callback(stop_all)
    for n in range(1, args.clusters + 1):
        for port, target in ((16379, "127.0.0.1:6379"), (15432, "127.0.0.1:5432")):
            procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "delay_proxy.py"), "--listen",
                                           f"10.77.{n}.1:{port}", "--to", target, "--delay-ms", str(args.delay_ms)]))
            wait_port(f"10.77.{n}.1", port)
    rtt = sh("ip", "netns", "exec", f"{PREFIX}1", sys.executable, os.path.join(HERE, "delay_proxy.py"),
             "--listen", "10.77.1.1:16379", "--to", "unused:0", "--check").strip()

    sh("psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db_name}")
    drop = f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    stack.callback(sh, "psql", "-h", "127.0.0.1", "-U", "postgres", "-c", drop)
    sh(sys.executable, "-m", "django", "migrate", "-v", "0")

    import django  # the app registry: only once the environment above names the settings

    django.setup()
    from django_q.brokers import get_broker
    from django_q.models import Task
    from django_q.tasks import async_many

    stack.callback(lambda: get_broker().purge())
    ids = async_many("hosts_settings.mark", [(n, args.seconds, folder) for n in range(args.tasks)])
    number = dict(zip(ids, range(args.tasks)))

    began = time.monotonic()
    clusters: list[subprocess.Popen] = []
    stack.callback(stop_clusters, clusters)
    for n in range(1, args.clusters + 1):
        host_env = {**env, "HOSTS_HOST": f"h{n}", "HOSTS_REDIS": f"10.77.{n}.1:16379", "HOSTS_PG": f"10.77.{n}.1:15432"}
        clusters.append(subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}{n}", sys.executable, "-m", "django",
                                          "qcluster"], env=host_env, start_new_session=True))
    while len({n for n, _, _ in starts(folder)}) < args.tasks * args.kill_at or \
            not any(h == "h1" for _, h, _ in starts(folder)):
        if time.monotonic() - began > args.timeout:
            raise SystemExit("the clusters did not get going in time")
        time.sleep(0.01)
    hosts.kill(f"{PREFIX}1")
    killed_at = time.time()
    while Task.objects.filter(id__in=ids).count() < args.tasks and time.monotonic() - began < args.timeout:
        time.sleep(0.1)
    took = time.monotonic() - began

    rows = {number[t.id]: t.attempt_count for t in Task.objects.filter(id__in=ids)}
    again = sorted(n for n, attempts in rows.items() if attempts > 1)
    recovery = []
    for n in again:
        later = [at for m, h, at in starts(folder) if m == n and h != "h1" and at > killed_at]
        if later:
            recovery.append(later[0] - killed_at)
    runs = [n for n, _, _ in starts(folder)]
    return {
        "clusters": args.clusters, "broker": args.broker, "rtt through proxy": rtt, "tasks": args.tasks,
        "held by the killed host": len(again),
        "recovery max s": round(max(recovery), 2) if recovery else None,
        "recovery median s": round(statistics.median(recovery), 2) if recovery else None,
        "lost": args.tasks - len(rows), "ran twice": sum(runs.count(n) > 1 for n in set(runs)),
        "run s": round(took, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=2, help="hosts, one cluster each (default 2)")
    parser.add_argument("--broker", choices=["redis", "orm"], default="redis")
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=0.05, help="each task's sleep (default 0.05)")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="round trip the proxy adds (default 1.0)")
    parser.add_argument("--kill-at", type=float, default=0.3, help="share of tasks started at the kill")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the whole run may take")
    args = parser.parse_args()
    if args.clusters < 2:
        parser.error("--clusters must be 2 or more: one is killed, the others drain")
    lock.acquire()  # held until this process exits: bench runs share Redis and PostgreSQL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the clean-up below runs on SIGTERM too
    with ExitStack() as stack:
        result = run(args, stack)
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
