"""Rate limits: the how-to guide's settings, task and calls.

tests/unit/test_docs_examples.py checks the settings; tests/integration/test_docs_examples.py runs
`send_newsletter` and `monthly_reports` on two real clusters of these settings (`myapp.tasks` is the
tutorial's docs/examples/tutorial_tasks.py, with `send_mail` below).
"""

from django_q.tasks import async_task

# settings.py: the same rate_limits in every cluster of the queue.
Q_CLUSTER = {
    "rate_limits": {
        "myapp.tasks.send_mail": "5/s",  # a function, by its dotted path
        "group:reports": "5/h",  # every task of async_task(..., group="reports")
        "myapp.tasks.nightly_report": "100/m",  # a task of the group needs room under both
    },
}
# End of the settings.


def send_mail(address):  # in myapp/tasks.py
    return f"sent to {address}"


def send_newsletter(addresses):
    # All are queued at once; across every cluster, at most 5 start in any second.
    return [async_task("myapp.tasks.send_mail", address) for address in addresses]


def monthly_reports(months):
    # At most 5 an hour: the rest wait in the broker as deferred tasks, none is dropped.
    return [async_task("myapp.tasks.nightly_report", group="reports") for _ in range(months)]
