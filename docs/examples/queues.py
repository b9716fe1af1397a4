"""Several queues in one cluster: the how-to guide's settings, tasks and calls.

tests/unit/test_docs_examples.py checks the settings; tests/integration/test_docs_examples.py runs
`enqueue_an_order` on a real cluster of these settings with one worker (`myapp.tasks` is the
tutorial's docs/examples/tutorial_tasks.py, with the two tasks below).
"""

from django_q.tasks import async_task

# settings.py: one cluster serves three queues, earlier ones first.
Q_CLUSTER = {
    "name": "default",
    "queues": ["high", "default", "low"],
}
# End of the settings.

# qcluster -n fast serves "urgent" before "fast", with these keys over the others.
WITH_ALT_CLUSTERS = {
    "name": "default",
    "queues": ["high", "default", "low"],
    "ALT_CLUSTERS": {"fast": {"queues": ["urgent", "fast"], "workers": 8}},
}
# End of ALT_CLUSTERS.


def send_receipt(order_id):  # in myapp/tasks.py
    return f"receipt {order_id}"


def update_stock(order_id):  # in myapp/tasks.py
    return f"stock {order_id}"


def enqueue_an_order(order_id):
    async_task("myapp.tasks.nightly_report", cluster="low")  # waits for every ready task of the others
    async_task("myapp.tasks.update_stock", order_id)  # no cluster=: the queue `name`, "default"
    async_task("myapp.tasks.send_receipt", order_id, cluster="high")  # starts first
