#!/usr/bin/env python
"""The Django Q demo: migrate, start a cluster, run a few hundred real tasks, stop cleanly.

    python example/run_demo.py        (or: make demo)

Environment: DEMO_DB (SQLite file, default example/db.sqlite3), DEMO_ORDERS
(orders to price, default 300), DEMO_TIMEOUT (seconds to wait for the
results, default 120). Exits 0 only if every result came back right and the
cluster stopped with exit code 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SETTINGS = "demo_site.settings"
ORDERS = int(os.environ.get("DEMO_ORDERS", "300"))
CHECKSUMS = 50
WAIT = float(os.environ.get("DEMO_TIMEOUT", "120"))  # seconds for all results
STOP_WAIT = 60.0  # seconds for the cluster to exit after SIGTERM
POLL = 0.25  # seconds between looks at the results


class DemoError(Exception):
    """Something the demo checks went wrong; the message says what."""


@dataclass
class Enqueued:
    """What the demo sent, so that it knows what to wait for and what to expect."""

    group: str
    orders: list[dict]
    checksums: dict[str, dict] = field(default_factory=dict)  # task id -> order
    copysign: str = ""
    modf: str = ""
    receipt: str = ""
    receipt_group: str = ""
    declined: str = ""

    @property
    def single_ids(self) -> list[str]:
        return [*self.checksums, self.copysign, self.modf, self.receipt, self.declined]

    @property
    def total(self) -> int:
        return len(self.orders) + len(self.single_ids)


def main() -> int:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS  # not setdefault: pytest-django exports its own
    sys.path.insert(0, str(HERE))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from rich.console import Console

    console = Console(highlight=False)
    console.rule("[bold]Django Q demo")
    call_command("migrate", verbosity=0)
    console.print(f"database  {settings.DATABASES['default']['NAME']} (migrated)")

    fd, log_name = tempfile.mkstemp(prefix="django-q-demo-", suffix=".log")
    log_path = Path(log_name)
    ok = stopped = False
    with os.fdopen(fd, "wb") as log:
        cluster = start_cluster(log, settings)
        console.print(f"cluster   python manage.py qcluster, pid {cluster.pid}, log {log_path}")
        try:
            started = time.monotonic()
            sent = enqueue_and_wait(console, cluster)
            ok = report(console, sent, time.monotonic() - started)
        except DemoError as exc:
            console.print(f"[bold red]demo failed:[/] {exc}")
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
        finally:
            stopped = stop_cluster(console, cluster)
    hook_line = check_cluster_log(console, log_path) if stopped else False
    if ok and stopped and hook_line:
        log_path.unlink()
        console.print("[bold green]demo finished: every result is back and the cluster stopped cleanly")
        return 0
    show_log_tail(console, log_path)
    return 1


def start_cluster(log: Any, settings: Any) -> subprocess.Popen:
    """`manage.py qcluster` in its own process group, output to the log file."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DEMO_DB": str(settings.DATABASES["default"]["NAME"]),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=HERE,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )


def enqueue_and_wait(console: Any, cluster: subprocess.Popen) -> Enqueued:
    """Send every task with a progress bar, then wait (bounded) until each has a result."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from shop.tasks import make_order

    from django_q.tasks import async_task, count_group, fetch

    sent = Enqueued(group=f"orders-{uuid.uuid4().hex[:8]}", orders=[make_order(n) for n in range(1, ORDERS + 1)])
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        total = ORDERS + CHECKSUMS + 4  # + copysign, modf, the order with a hook, the declined card
        sending = progress.add_task("enqueued", total=total)
        done = progress.add_task("done", total=total)

        def send(*args: Any, **kwargs: Any) -> str:
            task_id = async_task(*args, **kwargs)
            progress.advance(sending)
            return task_id

        for order in sent.orders:
            send("shop.tasks.price_order", order, group=sent.group)
        for n in range(1, CHECKSUMS + 1):
            order = make_order(1000 + n)
            sent.checksums[send("shop.tasks.checksum", order)] = order
        sent.copysign = send("math.copysign", 2, -2)
        sent.modf = send("math.modf", 2.5, hook="hooks.print_result")
        sent.receipt_group = f"receipts-{uuid.uuid4().hex[:8]}"
        sent.receipt = send(
            "shop.tasks.price_order", make_order(4242), hook="shop.tasks.issue_receipt", group=sent.receipt_group
        )
        sent.declined = send("shop.tasks.charge_card", 17, "99.95")

        pending = set(sent.single_ids)
        deadline = time.monotonic() + WAIT
        while True:
            pending = {task_id for task_id in pending if fetch(task_id) is None}
            in_group = count_group(sent.group) + count_group(sent.group, failures=True)
            finished = in_group + len(sent.single_ids) - len(pending)
            progress.update(done, completed=finished)
            if finished >= sent.total:
                return sent
            if cluster.poll() is not None:
                raise DemoError(f"the cluster exited with code {cluster.returncode} before all tasks ran")
            if time.monotonic() > deadline:
                raise DemoError(f"only {finished} of {sent.total} tasks finished within {WAIT:.0f} s")
            time.sleep(POLL)


def report(console: Any, sent: Enqueued, elapsed: float) -> bool:
    """Check every result against what it should be and print a summary table."""
    from rich.table import Table
    from shop.models import Receipt
    from shop.tasks import checksum, order_total

    from django_q.models import Failure, Success
    from django_q.tasks import count_group, fetch, result, result_group

    problems: list[str] = []

    def expect(what: str, condition: bool) -> None:
        if not condition:
            problems.append(what)

    totals = result_group(sent.group) or []
    expected = sorted(order_total(order) for order in sent.orders)
    expect(f"{sent.group}: {len(totals)} results, expected {len(expected)}", len(totals) == len(expected))
    expect(f"{sent.group}: totals differ from the orders' prices", sorted(totals) == expected)
    group_failures = count_group(sent.group, failures=True)
    expect(f"{sent.group}: {group_failures} failures", not group_failures)

    wrong_sums = [tid for tid, order in sent.checksums.items() if result(tid) != checksum(order)]
    expect(f"{len(wrong_sums)} wrong checksums", not wrong_sums)
    expect(f"math.copysign(2, -2) gave {result(sent.copysign)!r}", result(sent.copysign) == -2.0)
    expect(f"math.modf(2.5) gave {result(sent.modf)!r}", result(sent.modf) == (0.5, 2.0))

    receipt = wait_for(lambda: Receipt.objects.filter(task_id=sent.receipt).first(), seconds=10)
    expect("the hook shop.tasks.issue_receipt wrote no receipt", receipt is not None)
    if receipt is not None:
        expect(f"receipt total {receipt.total}", receipt.total == order_total(fetch(sent.receipt).args[0]))

    declined = fetch(sent.declined)
    error_line = declined.result.strip().splitlines()[-1] if declined and isinstance(declined.result, str) else ""
    expect("charge_card did not fail", declined is not None and not declined.success)
    expect(f"charge_card's error line is {error_line!r}", "PaymentDeclined: card declined for order 17" in error_line)

    ids = [*sent.single_ids]
    succeeded = count_group(sent.group) + Success.objects.filter(id__in=ids).count()
    failed = count_group(sent.group, failures=True) + Failure.objects.filter(id__in=ids).count()

    table = Table(title="What came back", title_justify="left")
    table.add_column("task")
    table.add_column("result")
    sample = fetch(next(iter(sent.checksums)))
    first = ", ".join(str(total) for total in totals[:3])
    receipt_note = f"receipt {receipt.total}" if receipt else "no receipt"
    table.add_row(f"price_order x{len(sent.orders)}", f"{len(totals)} totals incl. VAT: {first}, …")
    table.add_row(f"checksum x{len(sent.checksums)}", f"{str(sample.result)[:16]}… in {sample.time_taken():.3f} s")
    table.add_row("math.copysign(2, -2)", repr(result(sent.copysign)))
    table.add_row("math.modf(2.5) + hook", repr(result(sent.modf)))
    table.add_row(
        "price_order + hook, group",
        f"{result(sent.receipt)}, {receipt_note}, group of {count_group(sent.receipt_group)}",
    )
    table.add_row("charge_card (fails)", f"[red]{error_line}")
    console.print(table)
    console.print(
        f"demo: {sent.total} tasks, {succeeded} succeeded, {failed} failed (1 on purpose) "
        f"in {elapsed:.1f} s ({sent.total / elapsed:.0f} tasks/s)"
    )
    expect(f"{succeeded} successes and {failed} failures", (succeeded, failed) == (sent.total - 1, 1))
    for problem in problems:
        console.print(f"[bold red]wrong:[/] {problem}")
    return not problems


def wait_for(probe: Callable[[], Any], seconds: float) -> Any:
    """probe() once it is truthy, or its last value after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := probe()) and time.monotonic() < deadline:
        time.sleep(POLL)
    return value


def stop_cluster(console: Any, cluster: subprocess.Popen) -> bool:
    """SIGTERM, wait (bounded) for exit code 0; kill whatever is left of its process group."""
    clean = False
    try:
        if cluster.poll() is None:
            console.print("stopping the cluster (SIGTERM) …")
            cluster.send_signal(signal.SIGTERM)
            try:
                cluster.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                console.print(f"[bold red]the cluster did not stop within {STOP_WAIT:.0f} s of SIGTERM")
        if cluster.returncode == 0:
            clean = True
            console.print("cluster stopped, exit code 0")
        elif cluster.returncode is not None:
            console.print(f"[bold red]the cluster exited with code {cluster.returncode}")
        exited = cluster.returncode is not None
        if exited and not wait_for(lambda: not _group_alive(cluster.pid), seconds=5):
            console.print("[bold red]the cluster left processes behind in its process group")
            clean = False
    finally:
        # Whatever happened above, nothing of the cluster outlives the demo.
        if cluster.poll() is None or _group_alive(cluster.pid):
            try:
                os.killpg(cluster.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            cluster.wait()
    return clean


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_cluster_log(console: Any, path: Path) -> bool:
    """The seed's hook example printed its result in the cluster's output; show what went wrong there."""
    from rich.text import Text

    text = path.read_text(errors="replace")
    for line in text.splitlines():
        if "did not exit" in line or "Traceback" in line:
            console.print(Text.assemble(("cluster log: ", "yellow"), line))
    if "(0.5, 2.0)" in text:
        return True
    console.print("[bold red]wrong:[/] hooks.print_result's output (0.5, 2.0) is not in the cluster's log")
    return False


def show_log_tail(console: Any, path: Path, lines: int = 30) -> None:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    console.rule(f"last {min(lines, len(text))} lines of the cluster log {path}")
    console.print("\n".join(text[-lines:]), markup=False)


if __name__ == "__main__":
    sys.exit(main())
