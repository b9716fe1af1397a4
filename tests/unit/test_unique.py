"""Unique tasks on the enqueue path: the keys, the options, async_many, sync mode and on_commit (database broker)."""

from __future__ import annotations

import datetime
import decimal
import os
import subprocess
import sys
import uuid

import pytest
from django.db import transaction

from django_q import signals
from django_q.brokers import get_broker
from django_q.exceptions import TaskTypeError
from django_q.models import OrmQ, Task
from django_q.tasks import async_chain, async_iter, async_many, async_task, cancel
from django_q.unique import unique_keys

from .helpers import received

pytestmark = pytest.mark.django_db(transaction=True)

SET_KEY = (
    "from django_q.unique import unique_keys;"
    "print(unique_keys(True, 'math.fsum', [({'b', 'a', 'c', 'd'},)], {'z': frozenset({'x', 'y'}), 'a': 1})[0])"
)


def test_the_default_key_is_the_same_in_processes_with_other_hash_seeds():
    keys = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", SET_KEY], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        keys.add(done.stdout.strip())
    assert len(keys) == 1
    (key,) = keys
    assert len(key) == 64 and int(key, 16) >= 0


def test_the_default_key_tells_apart_function_args_kwargs_and_types():
    def key(func, *args, **kwargs):
        return unique_keys(True, func, [args], kwargs)[0]

    assert key("a.f", 1, x=2) == key("a.f", 1, x=2)
    assert key("a.f", {"a": 1, "b": 2}) == key("a.f", {"b": 2, "a": 1})
    others = [
        key("a.f", 1, x=2), key("a.g", 1, x=2), key("a.f", 2, x=2), key("a.f", 1, x=3), key("a.f", 1, y=2),
        key("a.f", "1", x=2), key("a.f", 1.0, x=2), key("a.f", True, x=2), key("a.f", [1]), key("a.f", (1,)),
        key("a.f", b"1"), key("a.f", decimal.Decimal("1")), key("a.f", None),
    ]
    assert len(set(others)) == len(others)
    when = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC)
    assert key("a.f", when, uuid.UUID(int=5)) == key("a.f", when, uuid.UUID(int=5))


def test_a_given_key_is_the_same_whatever_the_call():
    assert unique_keys("report", "a.f", [(1,)], {}) == unique_keys("report", "b.g", [(2,)], {"x": 1})
    assert unique_keys("report", "a.f", [(1,)], {}) != unique_keys("report2", "a.f", [(1,)], {})


@pytest.mark.parametrize("unique, message", [
    ("", "unique must be True, False or a non-empty string"),
    (1, "unique must be True, False or a non-empty string"),
    (["k"], "unique must be True, False or a non-empty string"),
])
def test_a_bad_unique_option_is_refused_and_nothing_is_sent(unique, message):
    with pytest.raises(TaskTypeError, match=message):
        async_task("math.sqrt", 4, unique=unique)
    assert get_broker().size() == 0


def test_an_argument_without_a_stable_form_asks_for_a_key():
    with pytest.raises(TaskTypeError, match="type object.*unique='...'"):
        async_task("builtins.repr", object(), unique=True)
    assert get_broker().size() == 0
    assert async_task("builtins.repr", object(), unique="mine")


def test_a_second_enqueue_returns_the_first_id_and_sends_nothing():
    with received(signals.pre_enqueue) as calls:
        first = async_task("math.sqrt", 4, unique=True)
    assert len(calls) == 1
    assert async_task("math.sqrt", 4, unique=True) == first
    assert async_task("math.sqrt", 4, q_options={"unique": True, "priority": 9}) == first
    other = async_task("math.sqrt", 9, unique=True)
    plain = async_task("math.sqrt", 4)
    assert len({first, other, plain}) == 3
    assert get_broker().size() == 3
    assert async_task("math.sqrt", 4, unique="k") != first  # a given key is its own


def test_cancel_frees_the_key():
    first = async_task("math.sqrt", 4, unique="report")
    assert async_task("math.sqrt", 4, unique="report") == first
    assert cancel(first)
    second = async_task("math.sqrt", 4, unique="report")
    assert second != first
    assert async_task("math.sqrt", 4, unique="report") == second
    assert OrmQ.objects.get().key == second


def test_async_many_gives_each_task_its_own_key():
    held = async_task("math.sqrt", 4, unique=True)
    ids = async_many("math.sqrt", [1, 4, 9, 1], unique=True)
    assert ids[1] == held and ids[3] == ids[0]
    assert len({ids[0], ids[2], held}) == 3
    assert get_broker().size() == 3


def test_one_given_key_cannot_name_many_tasks_nor_the_parts_of_an_iter():
    with pytest.raises(TaskTypeError, match="names one task"):
        async_many("math.sqrt", [1, 4], unique="k")
    with pytest.raises(TaskTypeError, match="parts of an iter"):
        async_iter("math.sqrt", [1, 4], unique=True)
    assert get_broker().size() == 0


def test_a_chain_link_may_be_unique():
    first = async_task("math.sqrt", 4, unique="k")
    async_chain([("math.sqrt", (4,), {"unique": "k"}), ("math.floor", (2.5,))])
    assert get_broker().size() == 1
    assert OrmQ.objects.get().key == first


def test_sync_tasks_hold_no_key_and_each_runs(q_cluster):
    q_cluster(sync=True)
    first = async_task("math.sqrt", 4, unique=True)
    second = async_task("math.sqrt", 4, unique=True)
    assert first != second
    assert Task.objects.filter(id__in=[first, second], success=True).count() == 2
    with pytest.raises(TaskTypeError, match="unique must be"):
        async_task("math.sqrt", 4, unique=3)


def test_on_commit_checks_the_key_when_the_transaction_commits():
    held = async_task("math.sqrt", 4, unique="k")
    with transaction.atomic():
        later = async_task("math.sqrt", 4, unique="k", on_commit=True)
        assert later != held
    assert get_broker().size() == 1
    assert OrmQ.objects.get().key == held
    cancel(held)
    with transaction.atomic():
        later = async_task("math.sqrt", 4, unique="k", on_commit=True)
    assert OrmQ.objects.get().key == later
