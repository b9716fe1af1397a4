"""How to test code that enqueues tasks: run them in the test's own process with sync mode."""

from django.test import TestCase, override_settings

from django_q.models import Task
from django_q.tasks import async_task, result


def place_order(total):
    """The code under test: it enqueues a task and returns its id."""
    return async_task("math.floor", total, group="orders")


@override_settings(Q_CLUSTER={"sync": True})
class PlaceOrderTests(TestCase):
    def test_the_task_ran_and_its_result_is_stored(self):
        task_id = place_order(12.5)
        self.assertEqual(result(task_id), 12)
        self.assertTrue(Task.objects.get(id=task_id).success)

    def test_one_call_can_be_synchronous_too(self):
        with self.settings(Q_CLUSTER={}):
            task_id = async_task("math.floor", 1.5, sync=True)
        self.assertEqual(result(task_id), 1)
