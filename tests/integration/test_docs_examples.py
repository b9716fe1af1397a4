"""The examples of the tutorial, the Django 6 guide and the queues and rate limits guides (docs/examples/) on
real clusters."""

import sys

import django
import pytest
from django.test import override_settings

from django_q.brokers import close_brokers
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


# The how-to guides' queues and rate limits name their queues literally ("high", "default", ...): on the
# database broker only, whose queues live in this test run's own database (Redis db 14 is shared by runs).


@pytest.fixture
def example_settings(q_cluster):
    """Use an example's Q_CLUSTER over the test's (its name and queues win); ask for it before `cluster`, so
    that the clusters stop before the settings go back."""

    def use(example: dict):
        overridden = override_settings(Q_CLUSTER={**q_cluster, **example})
        overridden.enable()
        close_brokers()
        return overridden

    active = []
    yield lambda example: active.append(use(example))
    for overridden in active:
        overridden.disable()
    close_brokers()


def in_myapp_tasks(monkeypatch, *funcs):
    """The guide's tasks, which it puts in myapp/tasks.py (the workers fork from this process)."""
    tasks = sys.modules["myapp.tasks"]
    for func in funcs:
        monkeypatch.setattr(tasks, func.__name__, func, raising=False)


@pytest.mark.parametrize("broker_kind", ["orm"])
def test_the_queues_guide_runs_high_then_default_then_low(example_settings, cluster, myapp, monkeypatch,
                                                          broker_kind):
    from docs.examples import queues

    in_myapp_tasks(monkeypatch, queues.send_receipt, queues.update_stock)
    example_settings(queues.Q_CLUSTER)
    queues.enqueue_an_order(7)  # all three ready before the cluster starts
    cluster(workers=1, queue_limit=1)
    wait_until(lambda: Task.objects.count() == 3)
    ran = [(t.cluster, t.func, t.result) for t in Task.objects.order_by("started")]
    assert ran == [
        ("high", "myapp.tasks.send_receipt", "receipt 7"),
        ("default", "myapp.tasks.update_stock", "stock 7"),
        ("low", "myapp.tasks.nightly_report", "report done"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("broker_kind", ["orm"])
def test_the_rate_limits_guide_starts_at_most_5_a_second_across_two_clusters(example_settings, cluster, myapp,
                                                                             monkeypatch, broker_kind):
    from django_q.models import OrmQ
    from docs.examples import rate_limits

    in_myapp_tasks(monkeypatch, rate_limits.send_mail)
    example_settings(rate_limits.Q_CLUSTER)
    sent = rate_limits.send_newsletter([f"reader{n}@example.com" for n in range(16)])
    rate_limits.monthly_reports(7)
    cluster()
    cluster()  # two clusters of the queue share the limits
    mails = Task.objects.filter(func="myapp.tasks.send_mail")
    wait_until(lambda: mails.count() == len(sent), timeout=90)
    assert sorted(t.result for t in mails) == sorted(f"sent to reader{n}@example.com" for n in range(16))
    starts = sorted(t.started.timestamp() for t in mails)
    # No second holds more than 5 starts: any 6 in a row span a second.
    assert min(starts[i + 5] - starts[i] for i in range(len(starts) - 5)) >= 1.0
    # Of the 7 reports, the hour's 5 ran; 2 wait in the broker, deferred, not dropped. A report that
    # reaches its worker late (a stalled machine) goes back with its start still counted: then the
    # hour runs one fewer and one more waits, and the 7 are still all there.
    reports = Task.objects.filter(group="reports")
    wait_until(lambda: reports.count() + OrmQ.objects.count() == 7 and not OrmQ.objects.filter(leased=True).exists())
    assert 1 <= reports.count() <= 5
