#!/usr/bin/env python3
"""W7, a far broker: W2 and W3 of each Redis system with its workers a round trip away from Redis, against loopback.

For the far runs the workers start in a network namespace of their own
(`dq-h9`, hosts.Hosts) and reach the broker (db 12) through the link's far end
and bench/delay_proxy.py, which adds `--delay-ms` to every round trip. The
bench's counter (db 15, the task bodies' INCR and the W3 list) is a Redis
server of this script's own, listening on loopback and on the link, which
every run here uses, loopback or far: reached directly, with no relay, so only
the broker is far. (Through a relay, socat, the counter cost a drain of ours
0.22 of the 2 cores on 2026-12-04, a CPU the loopback runs did not pay.) The
driver enqueues on loopback, as an application next to Redis would. The
loopback runs are bench/run.py's, but for the counter's server. Each repeat
runs every system loopback then far (far first in the 2nd, 4th ... repeat).
Takes the bench lock; needs root (`ip netns`) and redis-server. Namespace,
link, proxy and the counter's server are removed on the way out, also on
Ctrl-C and SIGTERM.

    python3 bench/far.py -n 2000 --peers huey,dramatiq --delay-ms 1.2 --out /tmp/far.json

Prints per system: W2 loopback and far (tasks/s, start of the workers to the
N-th run), far as a share of loopback, W3 p50 loopback and far, and the far
p50's excess over loopback in round trips of the proxy (its `--check`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import lock  # noqa: E402
import venvs  # noqa: E402

REDIS_SYSTEMS = ("django-q", "django-q2", "celery", "rq", "huey", "dramatiq", "saq")
HOST = 9  # namespace dq-h9, link 10.77.9.0/24: apart from bench/hosts.py's dq-h1 ...
BROKER_PORT, COUNTER_PORT = 16379, 16380


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(REDIS_SYSTEMS[1:]), help="Redis peers ('' for ours only)")
    parser.add_argument("-n", type=int, default=2000, help="tasks per W2 drain (default 2000)")
    parser.add_argument("--lat-tasks", type=int, default=200, help="W3 tasks, 20 ms apart (default 200)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--delay-ms", type=float, default=1.0, help="round trip the proxy adds (default 1.0)")
    parser.add_argument("--deadline", type=float, default=12.0, help="seconds a drain may take (then cut short)")
    parser.add_argument("--out", default="", help="a JSON file for every run's figures")
    parser.add_argument("--baseline", metavar="REF",
                        help="also measure this package as it was at REF (a git commit-ish) as the system "
                             "django-q@<hash>, right after ours (as run.py's --baseline: its own venv of `git archive REF`)")
    opts = parser.parse_args(argv)
    opts.peers = [p.strip() for p in opts.peers.split(",") if p.strip()]
    bad = set(opts.peers) - set(REDIS_SYSTEMS[1:])
    if bad:
        parser.error(f"unknown Redis peer(s) {', '.join(sorted(bad))}; known: {', '.join(REDIS_SYSTEMS[1:])}")
    if opts.n < 1 or opts.lat_tasks < 1 or opts.repeats < 1:
        parser.error("-n, --lat-tasks and --repeats must be at least 1")
    venvs.take_baseline(parser, opts)
    return opts


def bootstrap(opts: argparse.Namespace) -> None:
    """As run.py: take the lock, make the venvs, continue in the harness venv with the lock held."""
    if os.environ.get("BENCH_IN_VENV") == "1":
        lock.inherited()
        return
    if os.geteuid() != 0:
        raise SystemExit("bench/far.py needs root: it makes a network namespace (ip netns)")
    fd = lock.acquire()
    ours = ["django-q"]
    if opts.baseline_system:
        venvs.export(opts.baseline_commit)
        ours.append(opts.baseline_system)
    for system in ("harness", *ours, *opts.peers):
        venvs.ensure(system)
    python = str(venvs.python("harness"))
    env = {**os.environ, "BENCH_IN_VENV": "1", lock.ENV: str(fd)}
    if opts.baseline_system:
        env["BENCH_BASELINE_COMMIT"] = opts.baseline_commit
    os.execve(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]], env)


def far_runner(scratch: Path, ns: str, link: str):
    """A workloads.Runner counting on the counter's own server; while `far` is set, its workers run in namespace
    `ns` and reach the broker through the delaying proxy."""
    from systems import BROKER_URL
    from workloads import Runner

    broker_url, far_counter_url = f"redis://{link}:{BROKER_PORT}/12", f"redis://{link}:{COUNTER_PORT}/15"

    class FarRunner(Runner):
        far = False

        def start(self, target):
            if not self.far:
                return super().start(target)
            env = {**self.worker_env(target), "BENCH_BROKER_URL": broker_url, "BENCH_COUNTER_URL": far_counter_url}
            cmd = [broker_url if part == BROKER_URL else part for part in target.worker_cmd()]  # rq's -u
            return self.launch(target, ["ip", "netns", "exec", ns, *cmd], env, "far-")

    return FarRunner(scratch, log=lambda *_: None, counter_url=f"redis://127.0.0.1:{COUNTER_PORT}/15")


def measure(opts: argparse.Namespace, stack: ExitStack) -> tuple[dict, str]:
    """system -> {"loopback"|"far" -> {"W2": [...], "W3-p50": [...], ...}}, and the proxy's measured round trip."""
    import hosts
    from run import settings
    from systems import Target

    hostset = hosts.Hosts(1, first=HOST)
    stack.callback(hostset.close)
    ns, link = hostset.names[0], f"10.77.{HOST}.1"
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("bench/far.py needs redis-server: the counter's Redis is a server of its own")
    scratch = Path(tempfile.mkdtemp(prefix="django_q_far-"))
    stack.callback(shutil.rmtree, scratch, True)
    helpers: list[subprocess.Popen] = []

    def stop_helpers() -> None:
        for proc in helpers:
            proc.kill()
            proc.wait(10)

    stack.callback(stop_helpers)
    helpers.append(subprocess.Popen([sys.executable, str(BENCH / "delay_proxy.py"), "--listen", f"{link}:{BROKER_PORT}",
                                     "--to", "127.0.0.1:6379", "--delay-ms", str(opts.delay_ms)]))
    # The counter's path is not part of what is measured: a server of its own, which the workers reach
    # directly, on loopback or across the link (reachable from this machine's namespaces only, hence no
    # protected mode, which would refuse the link's clients), nothing kept on disk.
    helpers.append(subprocess.Popen(
        [server, "--port", str(COUNTER_PORT), "--bind", f"127.0.0.1 {link}", "--protected-mode", "no", "--save", "",
         "--appendonly", "no", "--dir", str(scratch), "--logfile", str(scratch / "counter-redis.log")],
        stdout=subprocess.DEVNULL))
    hosts.wait_port(link, BROKER_PORT)
    hosts.wait_port(link, COUNTER_PORT)  # redis-server binds both its addresses before it serves either

    def round_trip(port: int) -> str:
        """The median PING round trip from the namespace to `port` on the link's far end (delay_proxy --check)."""
        return hosts.sh("ip", "netns", "exec", ns, sys.executable, str(BENCH / "delay_proxy.py"), "--listen",
                        f"{link}:{port}", "--to", "unused:0", "--check").strip()

    rtt, counter_rtt = round_trip(BROKER_PORT), round_trip(COUNTER_PORT)
    print(f"round trip from {ns}: {rtt} to the broker through the delaying proxy, {counter_rtt} to the counter's Redis")

    runner = far_runner(scratch, ns, link)
    stack.callback(runner.flush)
    conf = settings(argparse.Namespace(quick=False, n=None, repeats=None, w5_repeats=None))
    figures: dict = {}
    for rep in range(opts.repeats):
        for system in ("django-q", *([opts.baseline_system] if opts.baseline_system else []), *opts.peers):
            target = Target(system)
            for where in (("loopback", "far") if rep % 2 == 0 else ("far", "loopback")):
                runner.far = where == "far"
                row = figures.setdefault(system, {}).setdefault(where, {})
                drain = runner.drain(target, opts.n, opts.deadline, conf["enqueue_cap"])
                row.setdefault("W2", []).append(drain["rate"])
                row.setdefault("W2 complete", []).append(drain["complete"])
                row.setdefault("first task s", []).append(drain["first_s"])
                lat = runner.latency(target, opts.lat_tasks)
                for key in ("p50", "p90", "p99"):
                    row.setdefault(f"W3-{key}", []).append(lat[key])
                print(f"  rep {rep + 1} {system:<10} {where:<8} W2 {drain['rate']:,.0f}/s first {drain['first_s']:.2f} s"
                      f"{'' if drain['complete'] else ' (cut short)'}  W3 p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms",
                      flush=True)
    return figures, rtt


def table(figures: dict, rtt: str) -> str:
    rtt_ms = float(rtt.split()[0])
    med = statistics.median
    lines = [f"{'system':<12}{'W2 loop /s':>12}{'W2 far /s':>12}{'far/loop':>10}{'W3 p50 loop':>13}"
             f"{'W3 p50 far':>12}{'+RTTs':>8}{'W3 p99 far':>12}"]
    for system, rows in figures.items():
        loop, far = rows["loopback"], rows["far"]
        cut = "*" if not all(loop["W2 complete"] + far["W2 complete"]) else ""
        w2l, w2f, p50l, p50f = med(loop["W2"]), med(far["W2"]), med(loop["W3-p50"]), med(far["W3-p50"])
        lines.append(f"{system:<12}{w2l:>12,.0f}{w2f:>11,.0f}{cut:1}{w2f / w2l:>10.0%}{p50l:>13.2f}{p50f:>12.2f}"
                     f"{(p50f - p50l) / rtt_ms:>8.1f}{med(far['W3-p99']):>12.2f}")
    lines.append(f"medians; +RTTs: (far p50 - loopback p50) / the proxy's round trip ({rtt}); "
                 "* a drain cut short at the deadline (rate over what it ran)")
    return "\n".join(lines)


def main() -> int:
    opts = parse(sys.argv[1:])
    bootstrap(opts)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the clean-up below runs on SIGTERM too
    started = time.monotonic()
    with ExitStack() as stack:
        figures, rtt = measure(opts, stack)
    print()
    print(table(figures, rtt))
    print(f"load average at the end {os.getloadavg()[0]:.1f} (2 cores shared: other work skews every figure)")
    if opts.out:
        doc = {"command": " ".join(sys.argv), "rtt": rtt, "n": opts.n, "delay_ms": opts.delay_ms,
               "seconds": round(time.monotonic() - started), "figures": figures}
        Path(opts.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
