"""The admin pages of tasks, the queue and dead letters, through the test client, and who may run what."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import Permission, User
from django.test import RequestFactory, override_settings
from django.utils import timezone

from django_q.brokers import get_broker
from django_q.conf import get_config
from django_q.models import DeadLetter, Failure, OrmQ, Success, Task
from django_q.names import new_id
from django_q.package import TaskPackage, pack, unpack

pytestmark = pytest.mark.django_db

NASTY = "<script>alert('x')</script>"


def stored(success: bool = True, **fields) -> Task:
    stopped = timezone.now()
    values = dict(
        id=new_id(), name=f"task-{new_id()[:8]}", func="math.copysign", args=(2, -2), kwargs={"note": NASTY},
        result=-2.0, group="sums", started=stopped - timedelta(seconds=1.5), stopped=stopped, success=success,
        attempt_count=1, cluster=get_config().name,
    )
    values.update(fields)
    return Task.objects.create(**values)


def failed(**fields) -> Task:
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: it <broke>\n'
    return stored(False, func="tests.app.tasks.fail", args=("boom",), kwargs={}, result=traceback, **fields)


def package(secret: str | None = None, **fields) -> bytes:
    task = TaskPackage(id=new_id(), name=fields.pop("name", "packed-task"), func="tests.app.tasks.add", args=(1, 2),
                       **fields)
    if secret is None:
        return pack(task)
    with override_settings(SECRET_KEY=secret):
        return pack(task)


def staff_user(name: str, *perms: str) -> User:
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q", codename__in=perms))
    return user


VIEW_ALL = ("view_success", "view_failure", "view_ormq", "view_deadletter", "view_schedule", "view_inflight")


@pytest.fixture
def viewer(client):
    client.force_login(staff_user("viewer", *VIEW_ALL))
    return client


@pytest.fixture
def operator(client):
    client.force_login(staff_user("operator", *VIEW_ALL, "change_failure", "change_deadletter"))
    return client


def actions_for(model, user: User) -> set[str]:
    request = RequestFactory().get("/")
    request.user = user
    return set(site._registry[model].get_actions(request))


class TestTaskPages:
    def test_success_list_and_detail_are_readable_and_escaped(self, admin_client):
        task = stored()
        listing = admin_client.get("/admin/django_q/success/").content.decode()
        assert task.name in listing and "math.copysign" in listing and "1.500 s" in listing
        page = admin_client.get(f"/admin/django_q/success/{task.id}/change/").content.decode()
        assert "<pre" in page and "(2, -2)" in page
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
        assert NASTY not in page
        assert "1.500 s" in page and "-2.0" in page

    def test_failure_shows_the_error_in_the_list_and_the_traceback_on_its_page(self, admin_client):
        task = failed()
        listing = admin_client.get("/admin/django_q/failure/").content.decode()
        assert "ValueError: it &lt;broke&gt;" in listing
        page = admin_client.get(f"/admin/django_q/failure/{task.id}/change/").content.decode()
        assert "Traceback (most recent call last):\n  File &quot;x.py&quot;" in page

    def test_search_by_name_func_and_group(self, admin_client):
        one = stored(name="alpha-one", func="math.floor", group="g1")
        two = stored(name="beta-two", func="math.ceil", group="g2")
        for query, found, missing in (("alpha", one, two), ("math.ceil", two, one), ("g1", one, two)):
            page = admin_client.get("/admin/django_q/success/", {"q": query}).content.decode()
            assert found.name in page and missing.name not in page, query

    def test_filters_by_func_group_and_date(self, admin_client):
        old = stored(name="old-task", func="math.floor", group="g1")
        Task.objects.filter(pk=old.pk).update(started=timezone.now() - timedelta(days=30),
                                              stopped=timezone.now() - timedelta(days=30))
        new = stored(name="new-task", func="math.ceil", group="g2")
        page = admin_client.get("/admin/django_q/success/", {"func": "math.floor"}).content.decode()
        assert "old-task" in page and "new-task" not in page
        page = admin_client.get("/admin/django_q/success/", {"group": "g2"}).content.decode()
        assert "new-task" in page and "old-task" not in page
        since = (timezone.now() - timedelta(days=7)).isoformat()
        page = admin_client.get("/admin/django_q/success/", {"started__gte": since}).content.decode()
        assert new.name in page and old.name not in page

    def test_tasks_cannot_be_added_or_edited(self, admin_client):
        task = stored()
        assert admin_client.get("/admin/django_q/success/add/").status_code == 403
        page = admin_client.get(f"/admin/django_q/success/{task.id}/change/").content.decode()
        assert 'name="_save"' not in page


class TestResubmit:
    def test_superuser_resubmits_a_failure(self, admin_client):
        task = failed(group="retry-me")
        before = get_broker().size()
        page = admin_client.post("/admin/django_q/failure/", {"action": "resubmit", "_selected_action": [task.id]})
        assert page.status_code == 302
        assert not Failure.objects.filter(pk=task.pk).exists()
        assert get_broker().size() == before + 1
        (sent,) = [unpack(bytes(r.payload), 10**8) for r in OrmQ.objects.order_by("-id")[:1]]
        assert (sent.func, sent.args, sent.group) == ("tests.app.tasks.fail", ("boom",), "retry-me")

    def test_view_only_staff_get_no_action_and_cannot_post_one(self, viewer):
        user = User.objects.get(username="viewer")
        assert actions_for(Failure, user) == set()
        assert actions_for(Success, user) == set()
        task = failed()
        listing = viewer.get("/admin/django_q/failure/")
        assert listing.status_code == 200 and task.name in listing.content.decode()
        assert 'name="action"' not in listing.content.decode()
        assert viewer.get(f"/admin/django_q/failure/{task.id}/change/").status_code == 200
        before = get_broker().size()
        viewer.post("/admin/django_q/failure/", {"action": "resubmit", "_selected_action": [task.id]})
        viewer.post("/admin/django_q/failure/", {"action": "delete_selected", "_selected_action": [task.id],
                                                 "post": "yes"})
        assert Failure.objects.filter(pk=task.pk).exists()
        assert get_broker().size() == before

    def test_change_permission_grants_resubmit(self, operator):
        user = User.objects.get(username="operator")
        assert actions_for(Failure, user) == {"resubmit"}
        task = failed()
        operator.post("/admin/django_q/failure/", {"action": "resubmit", "_selected_action": [task.id]})
        assert not Failure.objects.filter(pk=task.pk).exists()


class TestQueue:
    def test_queued_tasks_show_their_task_only_when_signed(self, admin_client):
        broker = get_broker()
        good = broker.enqueue(package(name="queued-one", group="qg"))
        bad = broker.enqueue(package(secret="not-our-key", name="forged-one"))
        listing = admin_client.get("/admin/django_q/ormq/").content.decode()
        assert "queued-one" in listing and "tests.app.tasks.add" in listing
        assert "forged-one" not in listing and "signature does not match" in listing
        page = admin_client.get(f"/admin/django_q/ormq/{good}/change/").content.decode()
        assert "(1, 2)" in page and "queued-one" in page
        page = admin_client.get(f"/admin/django_q/ormq/{bad}/change/").content.decode()
        assert "forged-one" not in page

    def test_superuser_deletes_queued_tasks(self, admin_client):
        row = get_broker().enqueue(package())
        page = admin_client.post("/admin/django_q/ormq/", {"action": "delete_selected", "_selected_action": [row],
                                                            "post": "yes"})
        assert page.status_code == 302
        assert not OrmQ.objects.filter(pk=row).exists()

    def test_viewer_cannot_delete_queued_tasks(self, viewer):
        row = get_broker().enqueue(package())
        assert actions_for(OrmQ, User.objects.get(username="viewer")) == set()
        viewer.post("/admin/django_q/ormq/", {"action": "delete_selected", "_selected_action": [row], "post": "yes"})
        assert OrmQ.objects.filter(pk=row).exists()


class TestDeadLetters:
    def letters(self) -> tuple[DeadLetter, DeadLetter]:
        queue = get_broker().name
        good = DeadLetter.objects.create(broker_id="1", queue=queue, payload=package(name="was-forged-now-fine"),
                                         reason="signature does not match")
        bad = DeadLetter.objects.create(broker_id="2", queue=queue, payload=package(secret="other", name="evil"),
                                        reason="signature does not match <really>")
        return good, bad

    def test_list_and_detail(self, admin_client):
        good, bad = self.letters()
        listing = admin_client.get("/admin/django_q/deadletter/").content.decode()
        assert "was-forged-now-fine" in listing and "evil" not in listing
        assert "icon-yes" in listing and "icon-no" in listing  # verifies now: one does, one does not
        page = admin_client.get(f"/admin/django_q/deadletter/{bad.pk}/change/").content.decode()
        assert "signature does not match &lt;really&gt;" in page

    def test_requeue_enqueues_only_what_verifies_now(self, admin_client):
        good, bad = self.letters()
        broker = get_broker()
        before = broker.size()
        admin_client.post("/admin/django_q/deadletter/", {"action": "requeue",
                                                          "_selected_action": [good.pk, bad.pk]})
        assert broker.size() == before + 1
        assert list(DeadLetter.objects.values_list("pk", flat=True)) == [bad.pk]
        (row,) = OrmQ.objects.filter(queue=broker.name)
        assert unpack(bytes(row.payload), 10**8).name == "was-forged-now-fine"

    def test_purge(self, admin_client):
        good, bad = self.letters()
        admin_client.post("/admin/django_q/deadletter/", {"action": "purge", "_selected_action": [good.pk, bad.pk]})
        assert not DeadLetter.objects.exists()

    def test_view_only_staff_get_no_action_and_cannot_post_one(self, viewer):
        good, bad = self.letters()
        assert actions_for(DeadLetter, User.objects.get(username="viewer")) == set()
        listing = viewer.get("/admin/django_q/deadletter/")
        assert listing.status_code == 200 and 'name="action"' not in listing.content.decode()
        before = get_broker().size()
        for action in ("requeue", "purge"):
            viewer.post("/admin/django_q/deadletter/", {"action": action, "_selected_action": [good.pk, bad.pk]})
        assert DeadLetter.objects.count() == 2 and get_broker().size() == before

    def test_change_permission_grants_requeue_not_purge(self, operator):
        assert actions_for(DeadLetter, User.objects.get(username="operator")) == {"requeue"}

    def test_offers_purge_instead_of_delete_selected_without_a_deprecation(self, admin_client):
        """Django 6.1 asks an overridden get_actions() for its action_location; 5.2 has none to give."""
        self.letters()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # RemovedInDjango2028Warning on Django 6.1 without action_location
            listing = admin_client.get("/admin/django_q/deadletter/").content.decode()
        assert 'value="requeue"' in listing and 'value="purge"' in listing
        assert 'value="delete_selected"' not in listing


def test_every_page_loads(admin_client):
    stored(), failed()
    for model in ("success", "failure", "ormq", "deadletter", "schedule", "inflight"):
        assert admin_client.get(f"/admin/django_q/{model}/").status_code == 200, model
    assert "Django Q" in admin_client.get("/admin/").content.decode()


@pytest.mark.django_db(transaction=True)
class TestQueuedAndRunning:
    """The page of tasks still in the broker: what fetch(in_flight=True) sees before a result exists, and cancel."""

    def running_task(self) -> str:
        from django_q.brokers.base import RunningInfo
        from django_q.tasks import async_task

        task_id = async_task("tests.app.tasks.add", 5, 6, priority=7)
        broker = get_broker()
        (delivery,) = broker.dequeue()
        broker.mark_running({delivery.id: RunningInfo(get_config().name, "c1", "host-a:4242", 1_700_000_000).encode()})
        return task_id

    def test_queued_deferred_and_running_tasks_are_listed(self, admin_client):
        from django_q.tasks import async_task

        running = self.running_task()
        deferred = async_task("tests.app.tasks.add", 1, 1, countdown=600)
        queued = async_task("tests.app.tasks.add", 2, NASTY)
        page = admin_client.get("/admin/django_q/inflight/").content.decode()
        for task_id in (running, deferred, queued):
            assert task_id in page
        assert page.index(running) < page.index(queued) < page.index(deferred)
        assert "Running" in page and "host-a:4242" in page and "Queued" in page
        assert NASTY not in page  # arguments are not shown here; names and paths are escaped
        listing = admin_client.get("/admin/django_q/ormq/").content.decode()
        assert "running" in listing and "deferred" in listing and "host-a:4242" in listing

    def test_an_operator_cancels_a_queued_task(self, operator):
        from django_q.tasks import async_task, fetch

        task_id = async_task("tests.app.tasks.add", 1, 1, countdown=600)
        response = operator.post("/admin/django_q/inflight/", {"cancel": task_id}, follow=True)
        assert f"Cancelled task {task_id}" in response.content.decode()
        assert fetch(task_id).status == "cancelled"
        failures = operator.get("/admin/django_q/failure/?status=cancelled").content.decode()
        assert "Cancelled" in failures

    def test_cancel_of_a_running_task_is_a_request(self, admin_client):
        task_id = self.running_task()
        admin_client.post("/admin/django_q/inflight/", {"cancel": task_id})
        assert OrmQ.objects.get(key=task_id).cancel is True
        assert "cancelling" in admin_client.get("/admin/django_q/ormq/").content.decode()

    def test_viewers_see_no_cancel_button_and_cannot_post(self, viewer):
        from django_q.tasks import async_task

        task_id = async_task("tests.app.tasks.add", 1, 1)
        page = viewer.get("/admin/django_q/inflight/").content.decode()
        assert task_id in page and 'name="cancel"' not in page
        assert viewer.post("/admin/django_q/inflight/", {"cancel": task_id}).status_code == 403
        assert OrmQ.objects.filter(key=task_id).exists()
