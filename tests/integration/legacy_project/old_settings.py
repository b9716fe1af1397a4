"""The project as it was on django-q / django-q2 (run by the throwaway virtualenv's Python)."""

import json
import os

try:
    import pymysql

    pymysql.version_info = (2, 2, 1, "final", 0)  # Django asks mysqlclient >= 2.2.1 of it
    pymysql.install_as_MySQLdb()
except ImportError:
    pass

SECRET_KEY = os.environ["DQ_LEGACY_SECRET"]
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_q"]
DATABASES = {"default": json.loads(os.environ["DQ_LEGACY_DB"])}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# The database broker by default; a Redis broker instance gets the redis settings.
Q_CLUSTER = {"name": os.environ["DQ_LEGACY_NAME"], "orm": "default", "redis": json.loads(os.environ["DQ_LEGACY_REDIS"])}
