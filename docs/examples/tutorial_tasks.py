"""The tutorial's tasks module (in a project: myapp/tasks.py)."""

import logging

logger = logging.getLogger(__name__)


def add(a, b):
    """A task is a plain function, importable by its dotted path."""
    return a + b


def announce(task):
    """A hook: called in the cluster with the finished Task, success or failure."""
    outcome = "returned" if task.success else "failed with"
    logger.warning("task %s %s %r", task.name, outcome, task.result)
    return outcome


def nightly_report():
    return "report done"
