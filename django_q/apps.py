"""The Django app: system checks for Q_CLUSTER."""

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

from .conf import build_config, ignored_keys
from .exceptions import ConfigurationError


class DjangoQConfig(AppConfig):
    name = "django_q"
    verbose_name = "Django Q"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for its receiver, once the models may be (the app registry):
        # the database broker prepares every SQLite connection (busy timeout,
        # WAL), including those a worker's tasks and the monitor use.
        from .brokers import orm  # noqa: F401

        self.verbose_name = _label()
        checks.register(check_settings, checks.Tags.compatibility)


def _label() -> str:
    raw = getattr(settings, "Q_CLUSTER", None)
    label = raw.get("label") if isinstance(raw, dict) else None
    return label if isinstance(label, str) else "Django Q"


def check_settings(**_: Any) -> list[checks.CheckMessage]:
    """Report a bad Q_CLUSTER as an error and ignored django-q2 keys as warnings."""
    messages: list[checks.CheckMessage] = []
    try:
        build_config()
    except ConfigurationError as exc:
        messages.append(checks.Error(str(exc), id="django_q.E001"))
    for key in ignored_keys():
        messages.append(
            checks.Warning(f"Q_CLUSTER['{key}'] is a django-q2 setting that Django Q ignores", id="django_q.W001")
        )
    return messages
