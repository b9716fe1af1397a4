"""The Django app: system checks for Q_CLUSTER."""

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

from .conf import BROKER_PRECEDENCE, build_config, ignored_keys, unused_broker_keys, why_ignored
from .exceptions import ConfigurationError, UnsupportedBroker
from .reporters import missing as missing_reporters


class DjangoQConfig(AppConfig):
    name = "django_q"
    verbose_name = "Django Q"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for its receiver: every SQLite connection is prepared (busy
        # timeout, WAL), including those a worker's tasks and the pusher's saver use.
        # The database broker's own module waits until a broker is made.
        from .brokers import orm_sqlite  # noqa: F401

        self.verbose_name = _label()
        checks.register(check_settings, checks.Tags.compatibility)


def _label() -> str:
    raw = getattr(settings, "Q_CLUSTER", None)
    label = raw.get("label") if isinstance(raw, dict) else None
    return label if isinstance(label, str) else "Django Q"


def check_settings(**_: Any) -> list[checks.CheckMessage]:
    """Report a bad Q_CLUSTER as an error (E001; E002 for a broker Django Q does not have), ignored
    django-q2 keys (W001), error reporters no installed package provides (W002) and a LOGGING entry for
    django-q2's logger name (W003) and broker keys another overrides (W004) as warnings."""
    messages: list[checks.CheckMessage] = []
    config = None
    try:
        config = build_config()
    except UnsupportedBroker as exc:
        messages.append(checks.Error(str(exc), id="django_q.E002"))
    except ConfigurationError as exc:
        messages.append(checks.Error(str(exc), id="django_q.E001"))
    for key in ignored_keys():
        messages.append(checks.Warning(why_ignored(key), id="django_q.W001"))
    if config is not None:
        for problem in missing_reporters(config):
            messages.append(checks.Warning(problem, id="django_q.W002"))
        raw = getattr(settings, "Q_CLUSTER", None) or {}
        for key in unused_broker_keys(raw):
            used = next(k for k in BROKER_PRECEDENCE if k in raw)
            messages.append(checks.Warning(
                f"Q_CLUSTER['{key}'] is ignored: Q_CLUSTER['{used}'] picks the broker, as it did in django-q2",
                id="django_q.W004",
            ))
    loggers = (getattr(settings, "LOGGING", None) or {}).get("loggers") or {}
    if "django-q" in loggers and "django_q" not in loggers:
        messages.append(checks.Warning(
            "LOGGING configures the logger 'django-q', django-q2's name; Django Q logs to 'django_q', "
            "so rename that logger to keep its handlers and level", id="django_q.W003",
        ))
    return messages
