"""py-spy on the django_q cluster during W2 on Redis: a raw profile and its summary per process role.

    python bench/run.py --profile [-n N]

Writes bench/profiles/w2-redis.raw (py-spy's collapsed stacks: one line per
stack, rooted in the process titles) and prints, for each role (sentinel,
pusher with its fetcher, saver and scheduler threads, workers), the functions with the
most samples of their own (self) and the django_q functions with the most
samples under them (total). Idle waits are not sampled (py-spy without --idle).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import venvs
from systems import OURS, Target
from workloads import Runner

PROFILES = venvs.BENCH / "profiles"
RATE = 100  # samples per second
DURATION = 10  # seconds
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
TITLE = re.compile(r'^process (?P<pid>\d+):"django_q (?P<role>[a-z]+)(?P<slot>-\d+)?')
# The saver's and the scheduler's threads by their run(): the loop's stacks pass through saving.py too.
ROLES = (("worker.py", "worker"), ("fetcher.py", "pusher: fetcher thread"), ("Saver.run (", "pusher: saver thread"),
         ("SchedulerThread.run (", "pusher: scheduler thread"), ("pusher.py", "pusher: main thread"),
         ("sentinel.py", "sentinel"))
# Leaf frames where a thread blocks. py-spy's idle detection does not drop them
# here, so they are counted apart from work (a Redis or database round trip
# stays in the work lists: it is time a role spends per task).
WAITS = ("Condition.wait", "socket.accept", "_PollLikeSelector.select", "_wait (scheduler.py)", "sleep", "wait (")


def profile(runner: Runner, conf: dict) -> None:
    PROFILES.mkdir(exist_ok=True)
    target = Target(OURS)
    n = max(*conf["ns"], 40_000)
    runner.prepare(target)
    sent, _ = runner.enqueue(target, "noop", n)
    pyspy = str(venvs.python("harness").parent / "py-spy")  # the harness venv has the tools
    raw = PROFILES / "w2-redis.raw"
    group = runner.start(target)
    try:
        time.sleep(1.0)  # past Django's start, into the drain
        before = runner.done()
        subprocess.run(
            [pyspy, "record", "--subprocesses", "--rate", str(RATE), "-d", str(DURATION), "--format", "raw",
             "-o", str(raw), "--pid", str(group.pid)],
            check=True, capture_output=True, timeout=DURATION + 60,
        )
        after = runner.done()
    finally:
        group.kill()
    print(f"W2 Redis under py-spy: {after - before} tasks ran in the {DURATION} s profiled "
          f"({sent} queued, {runner.done()} ran in all); raw stacks in {raw}\n")
    print(summarize(raw.read_text()))


def role_of(frames: list[str]) -> str:
    text = ";".join(frames)
    for needle, role in ROLES:
        if needle in text:
            return role
    return "other"


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/django_q/" in file:
        file = "django_q/" + file.split("/django_q/", 1)[1]
    else:
        file = file.rsplit("/", 1)[-1]
    return f"{m['func']} ({file})"


def summarize(raw: str, top: int = 10) -> str:
    """Per role: samples, then the top functions by self samples and django_q functions by total samples."""
    self_count: dict[str, Counter] = defaultdict(Counter)
    total_count: dict[str, Counter] = defaultdict(Counter)
    samples: Counter = Counter()
    waiting: Counter = Counter()
    pids: dict[str, set] = defaultdict(set)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        titles = [TITLE.match(f) for f in frames if f.startswith("process ")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        role = role_of(frames)  # a child forked but not yet retitled still shows the sentinel's title
        if titles and titles[-1] and role.startswith(titles[-1]["role"]):
            pids[role].add(titles[-1]["role"] + (titles[-1]["slot"] or ""))
        c = int(count)
        samples[role] += c
        leaf = short(frames[-1])
        if any(leaf.startswith(w) or w in leaf for w in WAITS):
            waiting[role] += c
            continue
        self_count[role][leaf] += c
        for f in {short(f) for f in frames if "django_q/cluster/" in f and "sentinel.py" not in f} - {
            short(frames[0])
        }:
            total_count[role][f] += c
    lines = []
    for role in ("pusher: main thread", "pusher: fetcher thread", "pusher: saver thread", "pusher: scheduler thread",
                 "worker", "sentinel", "other"):
        if not samples[role]:
            continue
        slots = len(pids[role]) or 1  # worker-0 and worker-1, however often recycled
        work = samples[role] - waiting[role]
        busy = work / (RATE * DURATION) / slots
        lines.append(f"== {role} ({slots} slot{'s' if slots > 1 else ''}: working ~{busy:.0%} of the time"
                     f"{' each' if slots > 1 else ''}; {work} work samples, {waiting[role]} blocked waiting)")
        if not work:
            continue
        lines.append("   self (share of work samples):")
        for func, c in self_count[role].most_common(top):
            lines.append(f"     {c / work:6.1%}  {func}")
        lines.append("   total, django_q.cluster frames:")
        for func, c in total_count[role].most_common(top):
            lines.append(f"     {c / work:6.1%}  {func}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(summarize(Path(sys.argv[1]).read_text()))
