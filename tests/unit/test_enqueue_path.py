"""Every way in takes the one enqueue path: the same options, checked the same way, with the same effect."""

from __future__ import annotations

import time

import pytest

from django_q import signals
from django_q.brokers import get_broker
from django_q.brokers.base import DELAYED
from django_q.exceptions import PackageTooLarge, TaskTypeError
from django_q.models import OrmQ
from django_q.tasks import async_chain, async_iter, async_many, async_task

from .helpers import received

pytestmark = pytest.mark.django_db(transaction=True)


def delayed_by(task_id: str) -> float:
    """Seconds from now until the broker hands out the task enqueued under `task_id`."""
    pending = get_broker().lookup(task_id)
    assert pending is not None and pending.state == DELAYED
    return pending.due - time.time()


def test_async_iter_holds_its_parts_back_for_countdown():
    async_iter("math.sqrt", [1, 4, 9], countdown=60)
    assert get_broker().size() == 0
    keys = list(OrmQ.objects.values_list("key", flat=True))
    assert len(keys) == 3
    assert all(55 < delayed_by(key) <= 60 for key in keys)


def test_async_chain_holds_its_first_link_back_for_a_countdown_in_its_kwargs():
    with received(signals.pre_enqueue) as calls:
        async_chain([("math.sqrt", (4,), {"countdown": 60}), ("math.floor", (2.5,))])
    (first,) = [call["task"] for call in calls]
    assert get_broker().size() == 0
    assert 55 < delayed_by(first.id) <= 60
    assert first.kwargs == {} and first.chain == (("math.floor", (2.5,), {}),)


@pytest.mark.parametrize("enqueue", [
    lambda **options: async_iter("math.sqrt", [1, 4], **options),
    lambda **options: async_many("math.sqrt", [1, 4], **options),
    lambda **options: async_task("math.sqrt", 4, q_options=options),
], ids=["async_iter", "async_many", "async_task q_options"])
def test_an_unknown_option_is_refused_and_nothing_is_sent(enqueue):
    with pytest.raises(TaskTypeError, match="unknown option.*bogus_option"):
        enqueue(bogus_option=1)
    assert get_broker().size() == 0


@pytest.mark.parametrize("enqueue", [
    lambda: async_iter("math.sqrt", [1, 4], priority=500),
    lambda: async_many("math.sqrt", [1, 4], priority=500),
    lambda: async_chain([("math.sqrt", (4,), {"priority": 500})]),
    lambda: async_task("math.sqrt", 4, priority=500),
], ids=["async_iter", "async_many", "async_chain", "async_task"])
def test_every_way_in_checks_options_alike(enqueue):
    with pytest.raises(TaskTypeError, match="priority must be"):
        enqueue()
    assert get_broker().size() == 0


@pytest.mark.parametrize("compress", [False, True])
def test_package_limit_holds_before_compression(settings, compress):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "compress": compress, "package_limit": 10_000}
    with pytest.raises(PackageTooLarge):
        async_task("math.sqrt", "x" * 20_000)  # compresses to far under the limit
    assert get_broker().size() == 0
    async_task("math.sqrt", "x" * 9_000)
    assert get_broker().size() == 1
