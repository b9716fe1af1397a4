"""manage.py qcluster: run a cluster until SIGTERM or SIGINT."""

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_q import reporters
from django_q.brokers import get_broker
from django_q.cluster.process import log_to_stderr
from django_q.cluster.sentinel import pause_collector, resume_collector, run
from django_q.conf import build_config, check_name
from django_q.exceptions import BrokerError, ConfigurationError


class Command(BaseCommand):
    help = "Start a Django Q cluster: a pusher (which saves results and runs schedules) and the workers."
    # Q_CLUSTER is validated in handle(), so that a bad key stops the command
    # with one line rather than the system check report.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run-once", action="store_true", help="stop once the queue is empty")
        parser.add_argument(
            "-n", "--name", help="cluster (queue) name; overrides Q_CLUSTER['name'], with its ALT_CLUSTERS entry"
        )
        parser.add_argument(
            "-q", "--queue", action="append", dest="queues", metavar="QUEUE",
            help="a queue to serve; repeat it for several, served in the order given (overrides Q_CLUSTER['queues'])",
        )
        parser.add_argument(
            "--start-method", choices=["fork", "spawn", "forkserver"], help="multiprocessing start method"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        pause_collector()  # the sentinel resumes it as it forks the pusher
        try:
            self._start(options)
        finally:
            resume_collector()

    def _start(self, options: dict[str, Any]) -> None:
        try:
            config = build_config(check_name(options["name"]) if options["name"] else None, options["queues"])
            reporters.load(config)  # made here, so that forked workers inherit them
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        broker = get_broker(config.name, config)
        try:
            broker.ping()
        except BrokerError as exc:
            raise CommandError(f"cannot reach the {config.broker_kind} broker: {exc}") from None
        log_to_stderr(config.log_level)
        # What follows need not come before the first task, but it comes before the fork: made by the
        # sentinel after it, it cost 1.3 MiB of idle PSS (the pages it touched, copied) for a first task
        # about 2 ms sooner.
        logger = logging.getLogger("django_q")
        for warning in [*broker.setup_warnings(), *reporters.missing(config)]:
            logger.warning(warning)
        if config.broker_kind == "redis":
            # Packages a django-q / django-q2 cluster left in its Redis list run here (django_q.legacy).
            from django_q.brokers.redis import RedisBroker
            from django_q.legacy import take_redis_list

            assert isinstance(broker, RedisBroker)  # get_broker's for broker_kind "redis"
            take_redis_list(broker.client, config.name)
        run(config, run_once=options["run_once"], start_method=options["start_method"])

