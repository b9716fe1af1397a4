"""The API of django-q2 that a project moving over calls: fetch of unfinished tasks, the class API,
async_task's options, cached results, humanhash and the signals' arguments."""

import pytest

from django_q.brokers import get_broker
from django_q.models import Task
from django_q.tasks import async_task, fetch

sync_db = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue(q_cluster, queue_name):
    """A database-broker queue of this test's own, purged after."""
    q_cluster(name=queue_name)
    yield get_broker()
    get_broker().purge()


@sync_db
class TestFetch:
    def test_a_queued_task_is_none_unless_in_flight(self, queue):
        task_id = async_task("tests.app.tasks.add", 1, 2)
        assert fetch(task_id) is None  # as in django-q: not finished, nothing to fetch
        assert fetch(task_id, wait=50) is None
        pending = fetch(task_id, in_flight=True)
        assert isinstance(pending, Task) and pending._state.adding  # unsaved
        assert (pending.id, pending.status, pending.success, pending.result) == (task_id, "queued", None, None)
        assert not Task.objects.filter(id=task_id).exists()

    def test_a_finished_task_is_the_stored_row_either_way(self, queue):
        task_id = async_task("tests.app.tasks.add", 1, 2, sync=True)
        assert fetch(task_id).result == 3
        assert fetch(task_id, in_flight=True).result == 3
        assert not fetch(task_id, in_flight=True)._state.adding

    def test_an_unknown_task_is_none_either_way(self, queue):
        assert fetch("0" * 32) is None and fetch("0" * 32, in_flight=True) is None

