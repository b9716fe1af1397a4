"""The admin's dashboard page and its data endpoint: who may see them, and what the data holds."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from django_q.brokers import get_broker
from django_q.conf import get_config
from django_q.history import HistoryWriter
from django_q.models import DeadLetter, Schedule
from django_q.outcomes import Outcome
from django_q.package import TaskPackage

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "admin:django_q_dashboard_changelist"
DATA = "admin:django_q_dashboard_data"


def staff(name: str, *perms: str) -> User:
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q", codename__in=perms))
    return user


@pytest.fixture
def history():
    """What a saver would have written: 3 successes of app.ok, 1 failure of app.bad, this minute."""
    config = get_config()
    broker = get_broker(config.name, config)
    writer = HistoryWriter(broker, "test-writer")
    now = time.time()
    task = TaskPackage(id="t", name="n", func="app.ok", enqueued=now - 0.5)
    bad = TaskPackage(id="u", name="m", func="app.bad", enqueued=now - 0.5)
    writer.add([Outcome("d", task, True, 1, now - 0.2, now - 0.1, 1, config.name) for _ in range(3)])
    writer.add([Outcome("e", bad, False, "Traceback", now - 0.2, now - 0.1, 1, config.name)])
    writer.flush(force=True)
    yield
    broker.purge()


@pytest.mark.parametrize("url", [PAGE, DATA])
def test_anonymous_is_sent_to_the_login_page(client, url):
    response = client.get(reverse(url))
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("url", [PAGE, DATA])
def test_staff_who_may_not_view_tasks_get_403(client, url):
    client.force_login(staff("clerk", "view_schedule", "view_deadletter"))
    assert client.get(reverse(url)).status_code == 403


def test_the_app_index_links_to_it_for_those_who_may_view_tasks(client):
    client.force_login(staff("clerk", "view_schedule"))
    assert reverse(PAGE) not in client.get(reverse("admin:app_list", args=["django_q"])).content.decode()
    client.force_login(staff("ops", "view_failure"))
    index = client.get(reverse("admin:app_list", args=["django_q"])).content.decode()
    assert reverse(PAGE) in index
    page = client.get(reverse(PAGE))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-url="%s"' % reverse(DATA) in body and "django_q/dashboard.js" in body
    assert f'data-queue="{get_config().name}"' in body


def test_no_task_is_shown_through_the_dashboard_model(client):
    client.force_login(User.objects.create_superuser("root", password="pw"))
    assert client.get(reverse(PAGE) + "some-task-id/change/").status_code == 404


def test_the_data_holds_the_history_dead_letters_and_due_schedules(client, history):
    name = get_config().name
    DeadLetter.objects.create(broker_id="1", queue=name, payload=b"x", reason="bad signature")
    DeadLetter.objects.create(broker_id="2", queue="elsewhere", payload=b"x", reason="not this queue")
    Schedule.objects.create(func="math.floor", name="soon", next_run=timezone.now() + timedelta(minutes=10))
    Schedule.objects.create(func="math.floor", name="later", next_run=timezone.now() + timedelta(hours=3))
    client.force_login(staff("ops", "view_success"))
    response = client.get(reverse(DATA))
    assert response.status_code == 200
    (queue,) = response.json()["queues"]
    assert queue["queue"] == name and queue["error"] is None
    assert len(queue["minutes"]) == 60
    assert queue["totals"]["succeeded"] == 3 and queue["totals"]["failed"] == 1
    assert [(f["func"], f["runs"], f["failed"]) for f in queue["functions"]] == [("app.ok", 3, 0), ("app.bad", 1, 1)]
    assert queue["clusters"] == []
    assert queue["dead_letters"]["count"] == 1 and queue["dead_letters"]["latest"][0]["reason"] == "bad signature"
    assert [s["name"] for s in queue["schedules"]] == ["soon"]
    other = client.get(reverse(DATA) + "?queue=elsewhere").json()["queues"]
    assert [q["queue"] for q in other] == [name, "elsewhere"]
    assert other[1]["totals"]["started"] == 0 and other[1]["dead_letters"]["count"] == 1


def test_every_queue_the_cluster_serves_is_shown_then_those_asked_for(rf):
    from django_q.conf import Config
    from django_q.dashboard import queues

    config = Config(name="high", queues=("high", "default", "low"))
    assert queues(rf.get("/", {"queue": ["other", "low"]}), config) == ["high", "default", "low", "other"]
    assert queues(rf.get("/"), Config(name="solo")) == ["solo"]
