"""manage.py qmonitor: a live table of the running clusters of a queue; q or Ctrl-C quits."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandParser
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from django_q.brokers import get_broker
from django_q.conf import Config
from django_q.context import describe
from django_q.exceptions import BrokerError
from django_q.management.commands.qinfo import _config
from django_q.status import cluster_statuses

REFRESH = 1.0  # seconds between two redraws
WIDE = 140  # columns from which cluster ids are shown whole


class Command(BaseCommand):
    help = "Watch the running clusters of a Django Q queue (q or Ctrl-C quits)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run-once", action="store_true", help="print the table once and exit")
        parser.add_argument("-n", "--name", help="queue (cluster) name; Q_CLUSTER['name'] by default")

    def handle(self, *args: Any, **options: Any) -> None:
        config = _config(options["name"])
        out = getattr(self.stdout, "_out", self.stdout)
        console = Console(file=out)
        if not console.is_terminal:
            console = Console(file=out, width=max(console.width, 160))
        if options["run_once"]:
            console.print(view(config, console.width >= WIDE))
            return
        try:
            if not console.is_terminal:
                # Into a pipe or a file (where rich's Live would only draw the last
                # table, at exit): one table after another, each as it is made.
                while True:
                    console.print(view(config, console.width >= WIDE))
                    console.file.flush()
                    time.sleep(REFRESH)
            with keys(sys.stdin) as pressed, Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(view(config, console.width >= WIDE, live=True), refresh=True)
                    if "q" in pressed(REFRESH).lower():
                        break
        except KeyboardInterrupt:
            pass


def view(config: Config, wide: bool, live: bool = False) -> RenderableType:
    """The clusters table, the workers table and a footer line, for every queue of `config` (served_queues)."""
    names = config.served_queues
    found: dict[str, Any] = {}
    sizes = {}
    try:
        for name in names:
            for status in cluster_statuses(name, config):
                found.setdefault(status.id, status)  # a cluster serving several queues is in each
            sizes[name] = get_broker(name, config).size()
    except BrokerError as exc:
        return Text(f"{config.broker_kind} broker of queue {name!r} unreachable: {exc}", style="bold red")
    statuses = sorted(found.values(), key=lambda s: (s.started, s.id))
    what = f"queue {names[0]!r}" if len(names) == 1 else f"queues {', '.join(map(repr, names))}"
    clusters = Table(title=f"Django Q clusters of {what}", title_justify="left")
    columns = ["Cluster", "Host", "PID", "State", "Workers", "Busy", "Queued", "Done", "Failed", "Up time"]
    if len(names) > 1:
        columns.insert(4, "Queues")
    for column in columns:
        clusters.add_column(column, no_wrap=column != "Queues", justify="right" if column in NUMERIC else "left")
    workers = Table(title="Workers", title_justify="left")
    for column in ("Cluster", "Worker", "PID", "Task", "Task id", "Running for", "Progress"):
        workers.add_column(column, no_wrap=column not in ("Task", "Progress"),
                           justify="right" if column in NUMERIC else "left")
    now = time.time()
    for status in statuses:
        short = status.id if wide else status.id[:8]
        serves = [", ".join(status.queues or (status.name,))] if len(names) > 1 else []
        clusters.add_row(
            short, status.host, str(status.pid), Text(status.state, style=STATE_STYLES.get(status.state, "")),
            *serves, str(len(status.workers)), str(status.running), str(status.queued), str(status.done), str(status.failed),
            duration(status.uptime),
        )
        for worker in status.workers:
            running = duration(now - worker.started) if worker.task_name and worker.started else ""
            workers.add_row(short[:8], str(worker.index), str(worker.pid), worker.task_name or "idle",
                            worker.task_id or "", running, describe(worker.progress))
    queued = str(sizes[names[0]]) if len(names) == 1 else ", ".join(f"{q} {n}" for q, n in sizes.items())
    plain = f"queue {names[0]}" if len(names) == 1 else f"queues {', '.join(names)}"
    footer = f"{plain} · {config.broker_kind} broker · queued: {queued} · {time.strftime('%H:%M:%S')}"
    if live:
        footer += " · q quits"
    if not statuses:
        return Group(Text(f"No cluster of {what} is running."), Text(footer, style="dim"))
    return Group(clusters, workers, Text(footer, style="dim"))


NUMERIC = {"PID", "Workers", "Busy", "Queued", "Done", "Failed", "Worker"}
STATE_STYLES = {"running": "green", "starting": "yellow", "stopping": "yellow"}


def duration(seconds: float) -> str:
    """'3d 04:05:06' or '04:05:06'."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


@contextmanager
def keys(stream: TextIO) -> Iterator[Any]:
    """Yield `pressed(timeout)`: the keys typed within `timeout` seconds ('' if none).

    On a terminal, keys are read one by one (cbreak mode, restored on exit;
    Ctrl-C still interrupts). Otherwise nothing can be typed: it only waits.
    """
    try:
        fd = stream.fileno()
        terminal = os.isatty(fd)
    except (AttributeError, ValueError, OSError):
        terminal = False
    if not terminal:
        def wait(timeout: float) -> str:
            time.sleep(timeout)
            return ""

        yield wait
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 64).decode(errors="replace") if ready else ""

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
