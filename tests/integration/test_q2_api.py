"""django-q2's class API and cached results against a real cluster.

The cache is Redis (Django's RedisCache on the test Redis database): the
results are written by the cluster's saver (in its pusher) and read here, in another process.
"""

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from django_q.brokers import get_broker
from django_q.models import Task
from django_q.tasks import (
    AsyncTask,
    Chain,
    Iter,
    async_task,
    delete_cached,
    fetch,
    fetch_cached,
    result,
    result_cached,
    result_group_cached,
)


@pytest.fixture
def redis_cache(queue_name, redis_client):
    """CACHES["default"] on Redis, with a key prefix of this test's own; its keys are deleted after."""
    caches_setting = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": queue_name,
        }
    }
    with override_settings(CACHES=caches_setting):
        yield caches["default"]
    for key in redis_client.scan_iter(f"{queue_name}:*"):
        redis_client.delete(key)


def test_cached_results_go_through_the_cache(cluster, redis_cache, redis_client, q_cluster):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.add", 1, 2, cached=60)
    assert result_cached(task_id, wait=30_000) == 3
    assert fetch_cached(task_id).success is True and fetch(task_id) is None  # not in the database
    # Django's key for "{queue}:{id}", kept the 60 seconds asked for.
    ttl = redis_client.ttl(redis_cache.make_and_validate_key(f"{q_cluster['name']}:{task_id}"))
    assert 0 < ttl <= 60
    forever = async_task("tests.app.tasks.add", 2, 2, cached=True, group="g")
    assert result_group_cached("g", wait=30_000) == [4]
    assert redis_client.ttl(redis_cache.make_and_validate_key(f"{q_cluster['name']}:{forever}")) == -1
    assert delete_cached(task_id) is True and result_cached(task_id) is None


def test_broker_given_is_the_one_sent_through(cluster):
    cluster(workers=1)
    task_id = async_task("tests.app.tasks.add", 2, 5, broker=get_broker())
    assert result(task_id, wait=30_000) == 7


def test_class_api(cluster, redis_cache):
    cluster(workers=2)
    task = AsyncTask("tests.app.tasks.add", 1, 2, group="cls")
    task.run()
    assert task.result(wait=30_000) == 3 and task.fetch().success and task.result_group(count=1) == [3]

    it = Iter("tests.app.tasks.add", args=[(1, 1), (2, 2)])
    it.append(3, 3)
    it.run()
    assert it.result(wait=30_000) == [2, 4, 6]

    chain = Chain()
    chain.append("tests.app.tasks.add", 1, 2)
    chain.append("tests.app.tasks.add", 3, 4)
    chain.run()
    assert chain.result(wait=30_000) == [3, 7] and chain.current() == 2

    cached_iter = Iter("tests.app.tasks.add", args=[(5, 5)], cached=True)
    parent = cached_iter.run()
    assert cached_iter.result(wait=30_000) == [10] and not Task.objects.filter(id=parent).exists()
