"""The tutorial's and the Django 6 guide's examples (docs/examples/) on a real cluster, on both brokers."""

import sys

import django
import pytest

from django_q.models import Task
from django_q.tasks import result

from .conftest import wait_until


@pytest.fixture
def myapp(monkeypatch):
    """The tutorial's `myapp.tasks` is docs/examples/tutorial_tasks.py (the workers fork from this process)."""
    from docs.examples import tutorial_tasks

    monkeypatch.setitem(sys.modules, "myapp", type(sys)("myapp"))
    monkeypatch.setitem(sys.modules, "myapp.tasks", tutorial_tasks)


def test_the_tutorial_on_a_cluster(cluster, myapp):
    from docs.examples import tutorial_use

    cluster()
    assert tutorial_use.first_task() == 5
    hooked = tutorial_use.with_a_hook()
    assert result(hooked, wait=30_000) == 5
    assert sorted(tutorial_use.a_group()) == [0, 2, 4, 6]
    wait_until(lambda: Task.objects.filter(id=hooked).exists())


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks exists from Django 6")
def test_the_django_tasks_example_on_a_cluster(cluster):
    from docs.examples.django_tasks import enqueue_and_read, word_count

    cluster()
    task_id = enqueue_and_read()

    def finished():
        got = word_count.get_result(task_id)
        return got if got.is_finished else None

    assert wait_until(finished).return_value == 4
