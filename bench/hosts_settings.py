"""Django settings of bench/hosts.py's clusters: where the broker and the database are comes from the environment.

HOSTS_BROKER   "redis" (Redis db 13) or "orm" (the database broker)
HOSTS_REDIS    host:port of Redis as this process reaches it (through a delay proxy from a namespace)
HOSTS_PG       host:port of PostgreSQL as this process reaches it; HOSTS_PG_NAME the database
HOSTS_QUEUE    the queue name
HOSTS_SAVE_LIMIT  Q_CLUSTER's save_limit (default 0: every result kept)
"""

import os
import time

SECRET_KEY = "bench-hosts-secret-key"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_q"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_pg_host, _pg_port = os.environ.get("HOSTS_PG", "127.0.0.1:5432").rsplit(":", 1)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("HOSTS_PG_NAME", "dq_hosts_bench"),
        "USER": "postgres",
        "HOST": _pg_host,
        "PORT": _pg_port,
    }
}
# retry: the default 60; save_limit 0 (every result kept) unless HOSTS_SAVE_LIMIT says otherwise
Q_CLUSTER = {"name": os.environ.get("HOSTS_QUEUE", "hosts"), "workers": 2,
             "save_limit": int(os.environ.get("HOSTS_SAVE_LIMIT", "0"))}
if os.environ.get("HOSTS_BROKER", "redis") == "redis":
    Q_CLUSTER["redis"] = f"redis://{os.environ.get('HOSTS_REDIS', '127.0.0.1:6379')}/13"
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_q": {"handlers": ["console"], "level": os.environ.get("HOSTS_LOG_LEVEL", "WARNING")}},
}


def mark(n: int, seconds: float, folder: str) -> int:
    """The bench task: note its start (task number, host, epoch) as a file in `folder`, then sleep `seconds`."""
    with open(os.path.join(folder, f"{n}-{os.environ.get('HOSTS_HOST', '?')}-{time.time()}"), "w"):
        pass
    time.sleep(seconds)
    return n


def tally(folder: str) -> None:
    """bench/hosts_share.py's task: one byte onto this host's file in `folder` (its size counts the host's runs)."""
    with open(os.path.join(folder, f"tally-{os.environ.get('HOSTS_HOST', '?')}"), "ab") as f:
        f.write(b".")


def occurrence(n: int, folder: str) -> None:
    """bench/hosts_share.py's scheduled task: note a run of schedule n (schedule, host, epoch) as a file."""
    with open(os.path.join(folder, f"sched-{n}-{os.environ.get('HOSTS_HOST', '?')}-{time.time()}"), "w"):
        pass
