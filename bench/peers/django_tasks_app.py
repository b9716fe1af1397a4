"""django.tasks tasks (Django 6) for django-tasks-db: the task bodies of jobs.py, declared with @task."""

from django.tasks import task

import jobs


@task
def noop(i):
    jobs.noop(i)


@task
def sleepy(i):
    jobs.sleepy(i)


@task
def latency(enqueued):
    jobs.latency(enqueued)
