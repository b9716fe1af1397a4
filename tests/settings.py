"""Settings for the test suite: SQLite by default, PostgreSQL and MariaDB as extra aliases."""

import os
from pathlib import Path

import pymysql

pymysql.install_as_MySQLdb()

BASE = Path(__file__).resolve().parent
# RUN_ID names this run's test databases, cluster names and scratch folder.
# Under pytest-xdist every worker process (gw0, gw1, ...) is a run of its own:
# the workers of one run share DQ_TEST_ID, and the worker's id keeps them apart.
# Subprocesses the tests start inherit both, so they agree with their test.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
RUN_ID = os.environ.get("DQ_TEST_ID", str(os.getpid())) + (f"_{_XDIST_WORKER}" if _XDIST_WORKER else "")
TMP = Path(os.environ.get("DQ_TEST_TMP", f"/tmp/django_q_tests_{RUN_ID}")) / _XDIST_WORKER
TMP.mkdir(parents=True, exist_ok=True)

SECRET_KEY = "test-secret-key-not-for-production"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_q",
    "tests.app",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Test databases get the run id in their names so that two runs on one machine
# (two Python versions, two developers) do not drop each other's databases.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(TMP / "db.sqlite3"),
        "TEST": {"NAME": str(TMP / "test_db.sqlite3")},
    },
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        # No DEPENDENCIES on "default": a run of only PostgreSQL or MariaDB tests
        # would otherwise stop at Django's "Circular dependency in TEST[DEPENDENCIES]".
        "TEST": {"NAME": f"test_dq_{RUN_ID}", "DEPENDENCIES": []},
    },
    "mysql": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "test",
        "USER": "root",
        "HOST": "127.0.0.1",
        "PORT": "3306",
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": f"test_dq_{RUN_ID}", "CHARSET": "utf8mb4", "DEPENDENCIES": []},
    },
}

# DQ_DEFAULT_DB=pg (or mysql) runs the suite with PostgreSQL (or MariaDB) as
# the default database, so that results, schedules and the database broker
# all live there.
_default = os.environ.get("DQ_DEFAULT_DB")
if _default in ("pg", "mysql"):
    DATABASES["default"], DATABASES["sqlite"] = DATABASES[_default], DATABASES["default"]
    DATABASES[_default] = DATABASES["default"]

REDIS_URL = os.environ.get("DQ_TEST_REDIS", "redis://127.0.0.1:6379/14")
# Q_CLUSTER['django_redis'] names a cache of django-redis (tests/brokers, tests/integration/test_django_redis.py)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "djredis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL},
}

Q_CLUSTER = {"name": f"test{RUN_ID}", "workers": 2, "retry": 5, "poll": 0.05}

# Django 6's own tasks API on the cluster (ignored by Django 5.2, which has no django.tasks).
TASKS = {
    "default": {
        "BACKEND": "django_q.tasks_backend.DjangoQBackend",
        "QUEUES": ["default", "other", "mapped"],
        "OPTIONS": {"CLUSTERS": {"mapped": f"mapped{RUN_ID}"}},
    }
}
