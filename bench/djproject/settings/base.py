"""What the Django projects share (Django Q, django-q2, django-tasks-db). The environment picks the broker and the database:

BENCH_BROKER      "redis" (the broker database, db 12) or "orm" (the `default` database)
BENCH_DB          "sqlite" (the file BENCH_SQLITE names) or "postgres" (BENCH_PG_NAME on 127.0.0.1)
BENCH_SAVE_LIMIT  Q_CLUSTER["save_limit"], when set (W2b uses 0)
BENCH_REDELIVERY  Q_CLUSTER["retry"] in seconds, when set (W5)
"""

import os

SECRET_KEY = "bench-secret-key"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_q"]  # djtasks: its own app
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

BROKER = os.environ.get("BENCH_BROKER", "redis")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")

if os.environ.get("BENCH_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["BENCH_PG_NAME"],
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["BENCH_SQLITE"]}}

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_q": {"handlers": ["console"], "level": os.environ.get("BENCH_LOG_LEVEL", "WARNING")}},
}


def cluster_options() -> dict:
    """The Q_CLUSTER keys the two systems spell the same way."""
    options = {"name": "bench", "workers": 2}
    if os.environ.get("BENCH_SAVE_LIMIT"):
        options["save_limit"] = int(os.environ["BENCH_SAVE_LIMIT"])
    if os.environ.get("BENCH_REDELIVERY"):
        options["retry"] = int(os.environ["BENCH_REDELIVERY"])
    return options
