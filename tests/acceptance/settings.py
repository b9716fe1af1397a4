"""Settings for a project run in subprocesses: `qcluster`, and a driver that enqueues and reads."""

import json
import os

import pymysql

pymysql.install_as_MySQLdb()

SECRET_KEY = "acceptance-secret-key"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_q", "tests.app"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DQ_ACCEPT_DB"]}}
if os.environ.get("DQ_ACCEPT_PG_PORT"):  # a PostgreSQL server of the test's own
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": os.environ["DQ_ACCEPT_PG_PORT"],
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
Q_CLUSTER = {"name": os.environ.get("DQ_ACCEPT_QUEUE", "accept"), "workers": 2, "retry": 5, "poll": 0.05}
if os.environ.get("DQ_ACCEPT_RETRY"):
    Q_CLUSTER["retry"] = float(os.environ["DQ_ACCEPT_RETRY"])
if os.environ.get("DQ_ACCEPT_SAVE_LIMIT"):
    Q_CLUSTER["save_limit"] = int(os.environ["DQ_ACCEPT_SAVE_LIMIT"])
if os.environ.get("DQ_ACCEPT_REDIS"):
    Q_CLUSTER["redis"] = os.environ["DQ_ACCEPT_REDIS"]
if os.environ.get("DQ_ACCEPT_REDIS_JSON"):  # e.g. a Sentinel setup
    Q_CLUSTER["redis"] = json.loads(os.environ["DQ_ACCEPT_REDIS_JSON"])
if os.environ.get("DQ_ACCEPT_Q_CLUSTER_JSON"):  # more keys, e.g. a django-q2 project's
    Q_CLUSTER.update(json.loads(os.environ["DQ_ACCEPT_Q_CLUSTER_JSON"]))
if os.environ.get("DQ_ACCEPT_FAILED_LOG"):  # task_failed receivers write each failed task's id there

    def _note_failed(sender, task, **kwargs):
        with open(os.environ["DQ_ACCEPT_FAILED_LOG"], "a") as f:
            f.write(f"{task.id} {task.success}\n")

    from django_q.signals import task_failed

    task_failed.connect(_note_failed, weak=False)
