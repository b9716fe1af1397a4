"""django-q2 from PyPI: its Redis broker (a dict of redis.Redis kwargs) or its ORM broker, defaults otherwise."""

import os
from urllib.parse import urlsplit

from .base import *  # noqa: F403
from .base import BROKER, BROKER_URL, cluster_options

Q_CLUSTER = cluster_options()
Q_CLUSTER["log_level"] = "WARNING"  # its default, INFO, logs a line per task
if BROKER == "redis":
    _url = urlsplit(BROKER_URL)
    Q_CLUSTER["redis"] = {"host": _url.hostname, "port": _url.port or 6379, "db": int(_url.path.strip("/") or 0)}
else:
    Q_CLUSTER["orm"] = "default"
if os.environ.get("BENCH_REDELIVERY"):
    # django-q2 wants timeout < retry; a W5 task takes 5 ms.
    Q_CLUSTER["timeout"] = max(1, Q_CLUSTER["retry"] - 2)
else:
    Q_CLUSTER["timeout"] = 30  # django-q2 warns at every start without a timeout below retry (60)
