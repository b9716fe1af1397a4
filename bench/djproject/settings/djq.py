"""This project (django_q from the repository): Redis URL or the database broker, defaults otherwise."""

from .base import *  # noqa: F403
from .base import BROKER, BROKER_URL, cluster_options

Q_CLUSTER = cluster_options()
if BROKER == "redis":
    Q_CLUSTER["redis"] = BROKER_URL
