"""This project (django_q from the repository): Redis URL or the database broker, defaults otherwise.

BENCH_RATE_LIMITS  Q_CLUSTER["rate_limits"] as JSON, when set (bench/rate_limits.py)
"""

import json
import os

from .base import *  # noqa: F403
from .base import BROKER, BROKER_URL, cluster_options

Q_CLUSTER = cluster_options()
if BROKER == "redis":
    Q_CLUSTER["redis"] = BROKER_URL
if os.environ.get("BENCH_RATE_LIMITS"):
    Q_CLUSTER["rate_limits"] = json.loads(os.environ["BENCH_RATE_LIMITS"])
