"""Settings of the demo project: SQLite and Django Q's database broker, no server needed."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# The demo's acceptance test points DEMO_DB at a temporary file.
DB_PATH = Path(os.environ.get("DEMO_DB") or BASE_DIR / "db.sqlite3")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-secret-key-change-me")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo_site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
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
STATIC_URL = "static/"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DB_PATH),
        # Several processes write here (the project enqueueing, the cluster
        # saving results): wait for a lock rather than fail at once.
        "OPTIONS": {"timeout": 20},
    }
}

# No 'redis' or 'orm' key: the database broker on the default database, which
# needs nothing but Django. DEMO_REDIS (a redis URL; the [redis] extra) runs the
# demo on the Redis broker instead, DEMO_QUEUE names its queue (default "demo").
Q_CLUSTER = {
    "name": os.environ.get("DEMO_QUEUE", "demo"),
    "workers": 2,
    "timeout": 30,
    "retry": 60,
    # The demo counts every result it enqueued, so keep them all (the default
    # keeps the newest 100 successes).
    "save_limit": 0,
}
if os.environ.get("DEMO_REDIS"):
    Q_CLUSTER["redis"] = os.environ["DEMO_REDIS"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
