"""The same project moved to this Django Q: same SECRET_KEY, same database, same cluster name."""

import json
import os

import pymysql

pymysql.install_as_MySQLdb()

SECRET_KEY = os.environ["DQ_LEGACY_SECRET"]
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_q"]
DATABASES = {"default": json.loads(os.environ["DQ_LEGACY_DB"])}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
Q_CLUSTER = {"name": os.environ["DQ_LEGACY_NAME"], "workers": 1, "poll": 0.05}
if os.environ.get("DQ_LEGACY_BROKER") == "redis":
    Q_CLUSTER["redis"] = json.loads(os.environ["DQ_LEGACY_REDIS"])
