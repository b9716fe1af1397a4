"""What the stepped scheduler tests share: the stores they run on (ATOMIC, SPLIT), their clock (BASE) and `env`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.test import override_settings

from django_q.brokers import close_brokers, get_broker
from django_q.cluster.scheduler import Scheduler
from django_q.conf import Config, get_config
from django_q.models import Schedule
from django_q.package import TaskPackage, unpack



def _db(*aliases: str) -> pytest.MarkDecorator:
    return pytest.mark.django_db(transaction=True, databases=["default", *aliases])


ATOMIC = [
    pytest.param(("default", "orm"), id="sqlite-orm", marks=_db()),
    pytest.param(("pg", "orm"), id="pg-orm", marks=_db("pg")),
    pytest.param(("mysql", "orm"), id="mysql-orm", marks=_db("mysql")),
]
SPLIT = [
    pytest.param(("default", "redis"), id="sqlite-redis", marks=_db()),
    pytest.param(("pg", "redis"), id="pg-redis", marks=_db("pg")),
]
BASE = datetime(2031, 1, 6, 12, 0, tzinfo=UTC)  # the clock of the stepped tests: far from the real one


@dataclass
class Env:
    """Where the schedules live, and the cluster settings of the schedulers under test."""

    alias: str
    config: Config

    @property
    def rows(self):
        return Schedule.objects.using(self.alias)

    def add(self, **fields) -> Schedule:
        fields.setdefault("func", "tests.app.tasks.add")
        fields.setdefault("args", "1, 2")
        fields.setdefault("next_run", BASE)
        return self.rows.create(**fields)

    def scheduler(self, **overrides) -> Scheduler:
        return Scheduler(replace(self.config, **overrides), alias=self.alias)

    def drain(self) -> list[TaskPackage]:
        """Take every package out of the broker."""
        broker = get_broker(config=self.config)
        deliveries = broker.dequeue(count=10_000, timeout=0)
        broker.ack([d.id for d in deliveries])
        return [unpack(d.payload, self.config.package_limit) for d in deliveries]


@pytest.fixture
def env(request, queue_name) -> Iterator[Env]:
    alias, kind = request.param
    conf = {"name": queue_name, "workers": 1, "retry": 5, "poll": 0.02}
    if kind == "redis":
        conf["redis"] = settings.REDIS_URL
    else:
        conf["orm"] = alias
    with override_settings(Q_CLUSTER=conf):
        config = get_config()
        yield Env(alias, config)
        get_broker(config=config).purge()
        close_brokers()


def stepped(*params):
    return pytest.mark.parametrize("env", params, indirect=True)
