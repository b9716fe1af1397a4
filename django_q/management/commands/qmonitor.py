"""manage.py qmonitor: a live table of the running clusters of a queue; q or Ctrl-C quits.

On a terminal it draws rich tables in place. Into a pipe or a file it prints
plain text tables, one set every interval: a title line, a header line and a
line per row, cells separated by two spaces or more (a cell never holds two
spaces in a row; an empty one is "-"), sets separated by a blank line. Without
rich (the [monitor] extra) it prints the plain tables on a terminal too.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_q.brokers import get_broker
from django_q.conf import Config
from django_q.context import describe
from django_q.exceptions import BrokerError
from django_q.extras import installed, missing
from django_q.management.commands.qinfo import _config
from django_q.status import ClusterStatus, cluster_statuses

if TYPE_CHECKING:
    from rich.console import RenderableType

REFRESH = 1.0  # seconds between two redraws, by default
WIDE = 140  # columns from which cluster ids are shown whole


class Command(BaseCommand):
    help = "Watch the running clusters of a Django Q queue (q or Ctrl-C quits)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run-once", action="store_true", help="print the tables once and exit")
        parser.add_argument("-n", "--name", help="queue (cluster) name; Q_CLUSTER['name'] by default")
        parser.add_argument("--memory", action="store_true",
                            help="memory view: each worker's RSS against max_rss, largest first")
        parser.add_argument("--interval", type=float, default=REFRESH,
                            help=f"seconds between two redraws (default {REFRESH:g})")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["interval"] > 0:
            raise CommandError(f"--interval must be a positive number of seconds, got {options['interval']!r}")
        config = _config(options["name"])
        out = cast(TextIO, getattr(self.stdout, "_out", self.stdout))  # the stream OutputWrapper wraps
        interval, memory = options["interval"], options["memory"]
        if not installed("rich"):
            if out.isatty():
                self.stderr.write(f"{missing('rich', 'The live view')}; plain tables instead")
            console = None
        else:
            from rich.console import Console

            console = Console(file=out)
        if console is None or not console.is_terminal:
            # Into a pipe or a file: plain tables, one set after another, each as it is made.
            try:
                while True:
                    out.write(plain(sheets(config, True, memory)) + "\n")
                    out.flush()
                    if options["run_once"]:
                        return
                    time.sleep(interval)
            except KeyboardInterrupt:
                return
        if options["run_once"]:
            console.print(rich_view(sheets(config, console.width >= WIDE, memory)))
            return
        from rich.live import Live

        try:
            with keys(sys.stdin) as pressed, Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(rich_view(sheets(config, console.width >= WIDE, memory, live=True)), refresh=True)
                    if "q" in pressed(interval).lower():
                        break
        except KeyboardInterrupt:
            pass


@dataclass
class Sheet:
    """One table: a title, column names, rows of text; or, without columns, a line of text."""

    title: str
    columns: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = field(default_factory=list)
    style: str = ""


def sheets(config: Config, wide: bool, memory: bool = False, live: bool = False) -> list[Sheet]:
    """What qmonitor shows now, for every queue of `config` (served_queues): the clusters and workers tables
    (or the memory table), and a footer."""
    names = config.served_queues
    found: dict[str, Any] = {}
    sizes = {}
    try:
        for name in names:
            for status in cluster_statuses(name, config):
                found.setdefault(status.id, status)  # a cluster serving several queues is in each
            sizes[name] = get_broker(name, config).size()
    except BrokerError as exc:
        return [Sheet(f"{config.broker_kind} broker of queue {name!r} unreachable: {exc}", style="bold red")]
    statuses = sorted(found.values(), key=lambda s: (s.started, s.id))
    several = len(names) > 1
    what = f"queues {', '.join(map(repr, names))}" if several else f"queue {names[0]!r}"
    queued = ", ".join(f"{q} {n}" for q, n in sizes.items()) if several else str(sizes[names[0]])
    plain = f"queues {', '.join(names)}" if several else f"queue {names[0]}"
    footer = f"{plain} · {config.broker_kind} broker · queued: {queued} · {time.strftime('%H:%M:%S')}"
    if live:
        footer += " · q quits"
    if not statuses:
        return [Sheet(f"No cluster of {what} is running."), Sheet(footer, style="dim")]
    if memory:
        return [memory_sheet(config, statuses, wide), Sheet(footer, style="dim")]
    columns = CLUSTER_COLUMNS[:4] + ("Queues",) + CLUSTER_COLUMNS[4:] if several else CLUSTER_COLUMNS
    clusters = Sheet(f"Django Q clusters of {what}", columns)
    workers = Sheet("Workers", WORKER_COLUMNS)
    now = time.time()
    for status in statuses:
        short = status.id if wide else status.id[:8]
        serves = (", ".join(status.queues or (status.name,)),) if several else ()
        clusters.rows.append((
            short, status.host, str(status.pid), status.state, *serves, str(len(status.workers)),
            str(status.running), str(status.queued), str(status.done), str(status.failed), f"{status.rate:.2f}",
            mib(status.rss), duration(status.uptime),
        ))
        for w in status.workers:
            running = duration(now - w.started) if w.task_name and w.started else ""
            workers.rows.append((short[:8], str(w.index), str(w.pid), mib(w.rss), percent(w.cpu), str(w.tasks),
                                 w.task_name or "idle", w.task_id or "", running, describe(w.progress)))
    return [clusters, workers, Sheet(footer, style="dim")]


def memory_sheet(config: Config, statuses: list[ClusterStatus], wide: bool) -> Sheet:
    """Every worker's memory, largest first, against max_rss (as this process's settings give it)."""
    limit = config.max_rss
    sheet = Sheet(f"Worker memory of queue {config.name!r} (max_rss: {f'{limit} KiB' if limit else 'none'})",
                  MEMORY_COLUMNS)
    rows = [(s, w) for s in statuses for w in s.workers]
    for status, w in sorted(rows, key=lambda r: -(r[1].rss or 0)):
        share = f"{100 * w.rss / limit:.0f}%" if limit and w.rss else ""
        sheet.rows.append(((status.id if wide else status.id[:8]), status.host, str(w.index), str(w.pid),
                           mib(w.rss), str(w.rss or ""), share, percent(w.cpu), str(w.tasks)))
    for status in statuses:
        sheet.rows.append(((status.id if wide else status.id[:8]), status.host, "all", "", mib(status.rss),
                           str(status.rss), "", "", str(sum(w.tasks for w in status.workers))))
    return sheet


CLUSTER_COLUMNS = ("Cluster", "Host", "PID", "State", "Workers", "Busy", "Queued", "Done", "Failed", "Tasks/s",
                   "RSS", "Up time")
WORKER_COLUMNS = ("Cluster", "Worker", "PID", "RSS", "CPU", "Tasks", "Task", "Task id", "Running for", "Progress")
MEMORY_COLUMNS = ("Cluster", "Host", "Worker", "PID", "RSS", "RSS KiB", "Of max_rss", "CPU", "Tasks")
NUMERIC = {"PID", "Workers", "Busy", "Queued", "Done", "Failed", "Worker", "Tasks/s", "RSS", "CPU", "Tasks",
           "RSS KiB", "Of max_rss"}
STATE_STYLES = {"running": "green", "starting": "yellow", "stopping": "yellow"}


def rich_view(found: list[Sheet]) -> RenderableType:
    """The sheets as rich tables (and text lines), for a terminal."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = []
    for sheet in found:
        if not sheet.columns:
            parts.append(Text(sheet.title, style=sheet.style))
            continue
        table = Table(title=sheet.title, title_justify="left")
        for column in sheet.columns:
            table.add_column(column, no_wrap=column not in ("Task", "Progress"),
                             justify="right" if column in NUMERIC else "left")
        state = sheet.columns.index("State") if "State" in sheet.columns else -1
        for row in sheet.rows:
            table.add_row(*(Text(cell, style=STATE_STYLES.get(cell, "")) if i == state else cell
                            for i, cell in enumerate(row)))
        parts.append(table)
    return Group(*parts)


def plain(found: list[Sheet]) -> str:
    """The sheets as plain text: each table a title, a header and its rows, cells aligned on two spaces."""
    blocks = []
    for sheet in found:
        if not sheet.columns:
            blocks.append(sheet.title)
            continue
        cells = [sheet.columns, *(tuple(" ".join(c.split()) or "-" for c in row) for row in sheet.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(sheet.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        blocks.append("\n".join([sheet.title, *lines]))
    return "\n\n".join(blocks) + "\n"


def mib(kib: int | None) -> str:
    return f"{kib / 1024:.1f} MiB" if kib else ""


def percent(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}%"


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
