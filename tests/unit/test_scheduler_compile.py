"""The sentinel compiles the scheduler's query before it forks the pusher (Scheduler.compile_pass): on
every backend that must open no connection, so that a cluster starts the same with its database down."""

from __future__ import annotations

import pytest
from django.utils import timezone

from django_q.cluster.scheduler import Scheduler
from django_q.conf import get_config


@pytest.mark.parametrize("alias", ["default", "pg", "mysql"])
def test_compiling_a_pass_opens_no_connection(alias: str) -> None:
    """No django_db mark: pytest-django fails any connection attempt here, as running the query shows."""
    scheduler = Scheduler(get_config(), alias)
    scheduler.compile_pass()
    with pytest.raises(RuntimeError, match="Database access not allowed"):
        list(scheduler._due_query(timezone.now()))
