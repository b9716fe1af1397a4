"""django-tasks-db: Django 6's django.tasks with the database backend, its defaults (queue "default")."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "django_q"] + ["django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
