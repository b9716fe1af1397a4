"""Django 6's own tasks API, run by the Django Q cluster (settings: TASKS, see the reference)."""

from django.tasks import task

from django_q.tasks_backend import retry_policy


@task(priority=10)
@retry_policy(retries=3, retry_delay=1, retry_backoff=2, retry_on=[ConnectionError])
def word_count(text):
    return len(text.split())


def enqueue_and_read():
    result = word_count.enqueue("never lose a task")  # status READY: in the broker
    return result.id  # later: word_count.get_result(result.id).return_value == 4
