"""manage.py qinfo: the queues at a glance, the effective settings, or the running clusters' ids."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_q.conf import Config, build_config, check_name
from django_q.exceptions import BrokerError, ConfigurationError
from django_q.status import cluster_statuses, overview


class Command(BaseCommand):
    help = "Show clusters, queue, results, schedules and dead letters of a Django Q queue."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-n", "--name", help="queue (cluster) name; Q_CLUSTER['name'] by default, and with "
                            "Q_CLUSTER['queues'] each of those")
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--config", action="store_true", help="print the effective settings, secrets masked")
        what.add_argument("--ids", action="store_true", help="print the ids of the running clusters, one a line")

    def handle(self, *args: Any, **options: Any) -> None:
        config = _config(options["name"])
        if options["config"]:
            self.stdout.write(json.dumps(config.masked(), indent=2, sort_keys=True, default=str))
            return
        if options["ids"]:
            try:
                statuses = [s for queue in config.served_queues for s in cluster_statuses(queue, config)]
            except BrokerError as exc:
                raise CommandError(f"cannot reach the {config.broker_kind} broker: {exc}") from None
            for cluster_id in dict.fromkeys(s.id for s in statuses):
                self.stdout.write(cluster_id)
            return
        view = overview(config.served_queues, config)
        several = len(view.queues) > 1
        rows = [
            ("queues" if several else "queue", ", ".join(q.name for q in view.queues)),
            ("broker", view.broker),
            ("clusters", len(view.clusters)),
            ("workers", view.workers),
            ("queued", _count(view.queued, {q.name: q.queued for q in view.queues} if several else None)),
            ("leased", _count(view.leased, {q.name: q.leased for q in view.queues} if several else None)),
            ("running", view.running),
            ("successes", view.successes),
            ("failures", view.failures),
            ("schedules", view.schedules),
            ("dead letters", view.dead_letters),
            ("mean run time", "-" if view.mean_run_time is None
             else f"{view.mean_run_time:.3f} s (last {view.recent} tasks)"),
        ]
        width = max(len(label) for label, _ in rows) + 2
        for label, value in rows:
            self.stdout.write(f"{label + ':':<{width}}{value}")


def _count(total: int | None, each: dict[str, int | None] | None) -> str:
    """A count, with each queue's when there are several: '8 (high 3, default 0, low 5)'."""
    text = "unreachable" if total is None else str(total)
    if each:
        text += " (" + ", ".join(f"{q} {'unreachable' if n is None else n}" for q, n in each.items()) + ")"
    return text


def _config(name: str | None) -> Config:
    """The settings, with the queue name of -n; a bad setting is one line."""
    try:
        return build_config(check_name(name) if name else None)
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
