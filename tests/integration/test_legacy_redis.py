"""qcluster's start takes what django-q left in its Redis list into our queue (django_q.legacy.take_redis_list)."""

import pickle

import pytest
from django.core import signing
from django.core.management import call_command
from django.test import override_settings

from django_q.brokers import close_brokers, get_broker
from django_q.models import DeadLetter
from django_q.package import unpack


class PickleSerializer:
    def dumps(self, obj):
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def signed(task_id: str, salt: str, key: str | None = None, **fields) -> str:
    task = {"id": task_id, "name": f"legacy-{task_id[:4]}", "func": "math.floor", "args": (1.5,), "kwargs": {},
            "group": "legacy", **fields}
    return signing.dumps(task, key=key, salt=salt, serializer=PickleSerializer)


def until_the_cluster_starts(monkeypatch) -> None:
    """qcluster does all it does at start, then returns where it would run the cluster (and logs nowhere new)."""
    monkeypatch.setattr("django_q.management.commands.qcluster.run", lambda config, **kwargs: None)
    monkeypatch.setattr("django_q.management.commands.qcluster.log_to_stderr", lambda level=None: None)


@pytest.fixture
def redis_queue(queue_name, redis_url, redis_client, db):
    with override_settings(Q_CLUSTER={"name": queue_name, "redis": redis_url}):
        yield f"django_q:{queue_name}:q"
        get_broker().purge()
        close_brokers()
    redis_client.delete(f"django_q:{queue_name}:q", f"django_q:{queue_name}:q:taking")


def test_the_list_and_what_a_dead_cluster_was_taking_go_to_our_queue_and_a_forged_one_to_the_dead_letters(
    redis_queue, redis_client, queue_name, monkeypatch
):
    redis_client.rpush(
        redis_queue,
        signed("a" * 32, queue_name),
        signed("f" * 32, queue_name, key="another-key"),
        signed("c" * 32, queue_name, args=5),  # signed, but no call can be made of it
        signed("d" * 32, queue_name, priority=500, timeout="soon"),  # an option our enqueue refuses
    )
    redis_client.rpush(f"{redis_queue}:taking", signed("b" * 32, queue_name))
    until_the_cluster_starts(monkeypatch)

    call_command("qcluster")

    assert redis_client.exists(redis_queue, f"{redis_queue}:taking") == 0
    broker = get_broker()
    packages = {}
    for delivery in broker.dequeue(count=10, timeout=1.0):
        package = unpack(delivery.payload, 1 << 20)
        packages[package.id] = package
    assert sorted(packages) == ["a" * 32, "b" * 32]
    assert packages["a" * 32].name == "legacy-aaaa" and packages["a" * 32].args == (1.5,)
    assert packages["a" * 32].group == "legacy"
    reasons = sorted(letter.reason for letter in DeadLetter.objects.filter(queue=queue_name))
    assert len(reasons) == 3, reasons
    for why in ("signature does not match", "'int' object is not iterable", "timeout must be"):
        assert sum(why in reason for reason in reasons) == 1, (why, reasons)


def test_nothing_to_take_costs_nothing(redis_queue, redis_client, monkeypatch):
    until_the_cluster_starts(monkeypatch)
    call_command("qcluster")
    assert get_broker().size() == 0 and not DeadLetter.objects.exists()
