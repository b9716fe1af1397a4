"""W7, clusters on several "hosts" sharing one queue: throughput, each one's share, CPU cost, schedules run once.

For each cluster count of `--clusters` (default 1, 2 and 4) this sets up that
many network namespaces (bench/hosts.py's Hosts: `dq-h1` ..., each behind a
bench/delay_proxy.py adding `--delay-ms` to every round trip to Redis and
PostgreSQL), queues `--tasks` tasks (`hosts_settings.tally`: one byte onto
its host's file), and `--schedules` ONCE schedules due one a second from the
start, then starts one cluster per namespace and measures:

- W2 from the start of the clusters until every task ran (tasks/s);
- each cluster's share of the tasks;
- the CPU time of every process in the namespaces over that drain (user +
  system, read just before the last task; the proxies are the network and are
  not counted), and tasks/s per CPU-second: this machine has 2 cores, so 4
  clusters share them;
- the schedules: each must run once, on whichever cluster claimed it.

Takes the bench lock; needs root. Everything set up is taken down on the way
out, also on Ctrl-C and SIGTERM.

    sudo .venv/bin/python bench/hosts_share.py --clusters 1,2,4 --tasks 5000 --schedules 10
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from datetime import timedelta

import psutil

import hosts
import lock

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_seconds(names: list[str]) -> float:
    """User + system CPU time of every process now in the namespaces `names`."""
    total = 0.0
    for ns in names:
        for pid in hosts.sh("ip", "netns", "pids", ns, check=False).split():
            with suppress(psutil.Error):
                t = psutil.Process(int(pid)).cpu_times()
                total += t.user + t.system
    return total


def tallies(folder: str) -> dict[str, int]:
    return {name[6:]: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
            if name.startswith("tally-")}


def one(count: int, args: argparse.Namespace, env: dict) -> dict:
    """One measurement with `count` clusters; everything it set up is gone when it returns."""
    # The app registry: these need django.setup(), done in main() once the environment names the settings.
    from django.utils import timezone

    from django_q.brokers import get_broker
    from django_q.models import Schedule, Task
    from django_q.tasks import async_many

    with ExitStack() as local:
        folder = local.enter_context(tempfile.TemporaryDirectory(prefix="dq-share-"))
        hostset = hosts.Hosts(count)
        local.callback(hostset.close)
        proxies: list[subprocess.Popen] = []

        def stop_proxies() -> None:
            for proc in proxies:
                proc.kill()
                proc.wait(10)

        local.callback(stop_proxies)
        for n in hostset.numbers:
            for port, target in ((16379, "127.0.0.1:6379"), (15432, "127.0.0.1:5432")):
                proxies.append(subprocess.Popen([sys.executable, os.path.join(HERE, "delay_proxy.py"), "--listen",
                                                 f"10.77.{n}.1:{port}", "--to", target, "--delay-ms",
                                                 str(args.delay_ms)]))
                hosts.wait_port(f"10.77.{n}.1", port)

        broker = get_broker()
        broker.purge()
        local.callback(broker.purge)
        Task.objects.all().delete()
        Schedule.objects.all().delete()
        local.callback(lambda: Schedule.objects.all().delete())
        async_many("hosts_settings.tally", [(folder,)] * args.tasks)

        clusters: list[subprocess.Popen] = []
        local.callback(hosts.stop_clusters, clusters)
        began = time.monotonic()
        start = timezone.now()
        # A dozen seconds' margin for the start-up: each occurrence comes due while every cluster runs.
        first_due = start + timedelta(seconds=3)
        for i in range(args.schedules):
            Schedule.objects.create(func="hosts_settings.occurrence", args=f"{i}, {folder!r}",
                                    schedule_type=Schedule.ONCE, repeats=1, next_run=first_due + timedelta(seconds=i))
        for n in hostset.numbers:
            host_env = {**env, "HOSTS_HOST": f"h{n}", "HOSTS_REDIS": f"10.77.{n}.1:16379",
                        "HOSTS_PG": f"10.77.{n}.1:15432"}
            clusters.append(subprocess.Popen(["ip", "netns", "exec", f"{hosts.PREFIX}{n}", sys.executable, "-m",
                                              "django", "qcluster"], env=host_env, start_new_session=True))
        cpu = 0.0
        while (done := sum(tallies(folder).values())) < args.tasks:
            if time.monotonic() - began > args.timeout:
                raise SystemExit(f"{count} cluster(s) ran {done} of {args.tasks} tasks in {args.timeout:.0f} s")
            cpu = cpu_seconds(hostset.names) if done > args.tasks * 0.9 else cpu
            time.sleep(0.01)
        took = time.monotonic() - began
        cpu = max(cpu, cpu_seconds(hostset.names))
        share = {host: runs / args.tasks for host, runs in sorted(tallies(folder).items())}

        deadline = first_due.timestamp() + args.schedules + 15
        ran: dict[int, list[str]] = {}
        while time.time() < deadline:
            ran = {}
            for name in os.listdir(folder):
                if name.startswith("sched-"):
                    _, i, host, _ = name.split("-", 3)
                    ran.setdefault(int(i), []).append(host)
            if len(ran) == args.schedules and time.time() > first_due.timestamp() + args.schedules + 3:
                break  # every one ran; a few seconds more would show a second run
            time.sleep(0.2)
        runs = [len(ran.get(i, [])) for i in range(args.schedules)]
        return {
            "clusters": count, "tasks": args.tasks, "W2 /s": round(args.tasks / took), "cpu s": round(cpu, 2),
            "/s per cpu-s": round(args.tasks / cpu) if cpu else None,
            "share": " ".join(f"{h} {s:.0%}" for h, s in share.items()),
            "schedules once": sum(r == 1 for r in runs), "never": runs.count(0),
            "twice+": sum(r > 1 for r in runs),
            "by": " ".join(f"{h} {sum(hs.count(h) for hs in ran.values())}" for h in sorted(share)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", default="1,2,4", help="cluster counts to measure, in turn (default 1,2,4)")
    parser.add_argument("--broker", choices=["redis", "orm"], default="redis")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--schedules", type=int, default=10, help="ONCE schedules, one due a second (default 10)")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="round trip the proxy adds (default 1.0)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each drain may take")
    args = parser.parse_args()
    try:
        counts = [int(c) for c in args.clusters.split(",")]
    except ValueError:
        parser.error(f"--clusters: {args.clusters!r} is not a comma-separated list of counts")
    if not counts or min(counts) < 1 or args.tasks < 1 or args.schedules < 0:
        parser.error("--clusters counts and --tasks must be at least 1, --schedules at least 0")
    lock.acquire()  # held until this process exits: the bench's Redis and PostgreSQL are shared
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the clean-up below runs on SIGTERM too
    queue, db_name = f"share{os.getpid()}", f"dq_share_bench_{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": HERE, "DJANGO_SETTINGS_MODULE": "hosts_settings", "HOSTS_QUEUE": queue,
           "HOSTS_BROKER": args.broker, "HOSTS_PG_NAME": db_name, "HOSTS_SAVE_LIMIT": "100"}
    os.environ.update(env)  # this process enqueues and reads on loopback
    rows = []
    with ExitStack() as stack:
        hosts.sh("psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db_name}")
        stack.callback(hosts.sh, "psql", "-h", "127.0.0.1", "-U", "postgres", "-c",
                       f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        hosts.sh(sys.executable, "-m", "django", "migrate", "-v", "0")
        import django  # the app registry: only once the environment above names the settings

        django.setup()
        for count in counts:
            rows.append(one(count, args, env))
            print("  ", rows[-1], flush=True)
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(f"{k:>{widths[k]}}" for k in keys))
    for r in rows:
        print("  ".join(f"{str(r[k]):>{widths[k]}}" for k in keys))
    print(f"broker {args.broker}, {args.delay_ms} ms added per round trip, save_limit 100; load average "
          f"{os.getloadavg()[0]:.1f} at the end (2 cores, shared)")


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
