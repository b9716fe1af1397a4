"""Q_CLUSTER['django_redis']: the Redis broker uses the connection django-redis keeps for that cache."""

import pytest
from django.test import override_settings
from django_redis import get_redis_connection

from django_q.brokers import close_brokers, get_broker
from django_q.brokers.redis import RedisBroker
from django_q.brokers.redis_client import django_redis_client
from django_q.exceptions import ConfigurationError
from django_q.tasks import async_task, queue_size, result


@pytest.fixture
def broker_kind() -> str:
    return "redis"  # the queue is purged after the test through the same server


@pytest.fixture
def django_redis_conf(q_cluster):
    conf = {k: v for k, v in q_cluster.items() if k != "redis"} | {"django_redis": "djredis"}
    close_brokers()
    with override_settings(Q_CLUSTER=conf):
        yield conf
        close_brokers()


def test_the_broker_is_redis_on_django_redis_own_client(django_redis_conf):
    broker = get_broker()
    assert isinstance(broker, RedisBroker)
    assert broker._client is get_redis_connection("djredis")


def test_a_cluster_runs_tasks_queued_through_django_redis(django_redis_conf, cluster):
    ids = [async_task("tests.app.tasks.add", n, 1) for n in range(5)]
    assert queue_size() == 5
    assert get_redis_connection("djredis").exists(*get_broker()._keys) > 0  # the keys are on that server
    cluster()
    assert [result(task_id, wait=30_000) for task_id in ids] == [1, 2, 3, 4, 5]


def test_a_cache_that_is_not_django_redis_is_named(settings):
    settings.CACHES = {**settings.CACHES, "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with pytest.raises(ConfigurationError, match="the cache 'local' is not a django-redis cache"):
        django_redis_client("local")
