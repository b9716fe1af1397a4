"""The Q_CLUSTER setting, read on first use, validated, and reset when settings change.

Nothing here is read at import time: `get_config()` builds a frozen `Config`
from the current settings and caches it until Django's `setting_changed`
signal says a setting it depends on changed (so `override_settings` works).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from importlib.util import find_spec
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import extras, guard, oldsettings, package, rates
from .exceptions import ConfigurationError, UnsupportedBroker

# Keys of django-q / django-q2 that this project accepts but does not use, so
# that a project moves over without editing its settings. They produce a
# warning from `manage.py check` (oldsettings.UNNEEDED says why each is not
# needed), not an error.
IGNORED_KEYS = frozenset(oldsettings.UNNEEDED)

# Flat settings of the seed, honoured when Q_CLUSTER does not set the key.
FLAT_SETTINGS = {"workers": "Q_WORKERS", "compress": "Q_COMPRESSED", "save_limit": "Q_SAVE_LIMIT"}

SETTING_NAMES = frozenset({"Q_CLUSTER", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "CACHES", *FLAT_SETTINGS.values()})


@dataclass(frozen=True)
class Config:
    """The effective cluster settings; see SPEC.md for what each key means."""

    name: str = "default"
    # Q_CLUSTER['queues'] or qcluster -q as given; empty: the cluster serves `name` (see served_queues).
    queues: tuple[str, ...] = ()
    workers: int = 1
    timeout: float | None = None
    retry: float = 60.0
    max_attempts: int = 0
    compress: bool = False
    save_limit: int = 100
    sync: bool = False
    redis: str | dict | None = None
    orm: str | None = None
    poll: float = 0.2
    recycle: int = 500
    max_rss: int | None = None
    queue_limit: int = 1
    ack_failures: bool = True
    catch_up: bool = True
    label: str = "Django Q"
    serializer: str = "pickle"
    package_limit: int = 16 * 1024 * 1024  # bytes; our addition
    cancel_grace: float = 5.0  # seconds a cancelled running task has to stop before its worker is killed
    on_commit: bool = False  # enqueue only when the surrounding transaction commits
    preload_tasks: bool = True  # the sentinel imports the modules of tasks run so far before it forks a worker
    cached: bool | int = False  # django-q2's: results in Django's cache (True, or seconds) instead of the database
    cache: str = "default"  # the alias of CACHES that cached results go to
    # Who may run what (issue 17): functions staff may schedule in the admin
    # (dotted paths, or module prefixes ending in "."), the metrics view's
    # bearer token, dead letters kept, and seconds async_task waits on a broker.
    admin_funcs: tuple[str, ...] = ()
    metrics_token: str | None = None
    metrics_functions: bool = False  # per-function counters and run-time histogram in the metrics view
    dead_letter_limit: int = 10_000
    enqueue_timeout: float = 5.0
    log_level: str | int | None = None  # the django_q logger's level in every cluster process
    error_reporter: dict | None = None  # {entry point name in djangoq.errorreporters: kwargs of its class}
    django_redis: str | None = None  # a CACHES alias: the Redis broker uses django-redis's connection of it
    # function path or "group:<name>" -> at most so many starts a period, across the queue's clusters
    rate_limits: dict[str, rates.Limit] = field(default_factory=dict)

    @property
    def served_queues(self) -> tuple[str, ...]:
        """The queues the cluster serves, in order: a ready task of an earlier one starts before any of a later one."""
        return self.queues or (self.name,)

    @property
    def broker_kind(self) -> str:
        """'redis' or 'orm': which broker the cluster uses."""
        return "redis" if self.redis is not None or self.django_redis is not None else "orm"

    @property
    def orm_alias(self) -> str:
        """The database alias of the database broker."""
        return self.orm or "default"

    def masked(self) -> dict[str, Any]:
        """The settings as a dict with passwords in redis URLs or dicts, and the metrics token, replaced by '***'."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["redis"] = _mask_redis(self.redis)
        out["metrics_token"] = None if self.metrics_token is None else "***"
        if self.error_reporter:  # a Sentry DSN or a Rollbar token is a secret too
            out["error_reporter"] = {name: {k: "***" for k in opts} for name, opts in self.error_reporter.items()}
        return out


def _mask_redis(value: str | dict | None) -> str | dict | None:
    if isinstance(value, dict):
        return {k: ("***" if "password" in k else v) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    parts = urlsplit(value)
    netloc = parts.netloc
    creds, at, host = netloc.rpartition("@")  # redis-py splits at the last '@' too
    if at and ":" in creds:
        netloc = f"{creds.split(':', 1)[0]}:***@{host}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_func_entry(value: Any) -> bool:
    """A dotted path or a module prefix ending in '.': identifiers joined by dots."""
    if not isinstance(value, str):
        return False
    parts = value[:-1].split(".") if value.endswith(".") else value.split(".")
    return all(part.isidentifier() for part in parts) and (value.endswith(".") or len(parts) > 1)


def _is_queue_name(value: Any) -> bool:
    return isinstance(value, str) and value != "" and ":" not in value


# key -> (check, what the value must be)
_RULES: dict[str, tuple[Any, str]] = {
    "name": (_is_queue_name, "a non-empty string without ':'"),
    "queues": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_queue_name(q) for q in v)
               and len(set(v)) == len(v), "a non-empty list of distinct queue names (non-empty strings without ':')"),
    "workers": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "timeout": (lambda v: v is None or (_is_number(v) and v > 0), "a positive number of seconds or None"),
    "retry": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "max_attempts": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: no limit)"),
    "compress": (lambda v: isinstance(v, bool), "True or False"),
    "save_limit": (lambda v: _is_int(v) and v >= -1, "an integer >= -1"),
    "sync": (lambda v: isinstance(v, bool), "True or False"),
    "redis": (lambda v: isinstance(v, (str, dict)), "a redis URL or a dict of redis.Redis arguments"),
    "orm": (lambda v: isinstance(v, str) and v in settings.DATABASES, "a database alias of DATABASES"),
    "poll": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "recycle": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "max_rss": (lambda v: v is None or (_is_int(v) and v > 0), "a positive number of KiB or None"),
    "queue_limit": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "ack_failures": (lambda v: isinstance(v, bool), "True or False"),
    "catch_up": (lambda v: isinstance(v, bool), "True or False"),
    "label": (lambda v: isinstance(v, str), "a string"),
    "serializer": (lambda v: v in ("pickle", "json"), "'pickle' or 'json'"),
    "package_limit": (lambda v: _is_int(v) and v > 0, "a positive number of bytes"),
    "cancel_grace": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
    "on_commit": (lambda v: isinstance(v, bool), "True or False"),
    "preload_tasks": (lambda v: isinstance(v, bool), "True or False"),
    "cached": (lambda v: isinstance(v, bool) or (_is_int(v) and v > 0), "True, False or a whole number of seconds > 0"),
    "cache": (lambda v: isinstance(v, str) and v in settings.CACHES, "an alias of CACHES"),
    "admin_funcs": (lambda v: isinstance(v, (list, tuple)) and all(_is_func_entry(e) for e in v),
                    "a list of dotted paths ('app.tasks.report') or module prefixes ending in '.' ('app.tasks.')"),
    "metrics_token": (lambda v: v is None or (isinstance(v, str) and len(v) >= 16),
                      "None or a string of at least 16 characters"),
    "metrics_functions": (lambda v: isinstance(v, bool), "True or False"),
    "dead_letter_limit": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "enqueue_timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "log_level": (lambda v: _is_int(v) or (isinstance(v, str) and v.upper() in logging.getLevelNamesMapping()),
                  "a logging level name such as 'INFO' or 'DEBUG', or a level number"),
    "error_reporter": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(o, dict)
                                                             for k, o in v.items()),
                       "a dict of {reporter name: dict of its options}"),
    "django_redis": (lambda v: isinstance(v, str) and v in settings.CACHES and find_spec("django_redis") is not None,
                     "a cache alias of CACHES, with django-redis installed"),
    "rate_limits": (lambda v: isinstance(v, dict), "a dict of {function path or 'group:<name>': 'N/s', 'N/m' or 'N/h'}"),
    "cluster_name": (_is_queue_name, "a non-empty string without ':'"),
}


def build_config(cluster: str | None = None, queues: list[str] | None = None) -> Config:
    """Read and validate the settings now; raise ConfigurationError naming the bad key.

    `cluster` (qcluster -n; else the Q_CLUSTER_NAME environment variable, as in
    django-q2) names the queue, with its ALT_CLUSTERS overrides. `queues`
    (qcluster -q) replaces Q_CLUSTER['queues'].
    """
    raw = getattr(settings, "Q_CLUSTER", None)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigurationError(f"Q_CLUSTER must be a dict, got {type(raw).__name__}")
    raw = _for_cluster(raw, cluster or os.environ.get("Q_CLUSTER_NAME"))
    values: dict[str, Any] = {}
    for key, flat in FLAT_SETTINGS.items():
        if key not in raw and hasattr(settings, flat):
            values[key] = _checked(key, getattr(settings, flat), flat)
    for key in oldsettings.DROPPED_BROKERS:
        if key in raw:
            raise UnsupportedBroker(f"Q_CLUSTER['{key}']: {oldsettings.DROPPED_BROKERS[key]}")
    for key, value in raw.items():
        if key in IGNORED_KEYS:
            continue
        if key not in _RULES:
            raise ConfigurationError(f"Q_CLUSTER['{key}']: unknown key (known keys: {', '.join(sorted(_RULES))})")
        values[key] = _checked(key, value, f"Q_CLUSTER['{key}']")
    if queues:
        values["queues"] = _checked("queues", list(queues), "qcluster -q")
    for key in unused_broker_keys(values):
        del values[key]
    _check_extras(values)
    # django-q2's queue name, kept apart from `name` there because `name` salted the
    # signature; here the signature does not depend on it, so it simply is the name.
    if "cluster_name" in values:
        values["name"] = values.pop("cluster_name")
    if not values.get("workers"):
        values["workers"] = os.cpu_count() or 1
    values.setdefault("queue_limit", values["workers"] ** 2)
    return Config(**values)


def _check_extras(values: dict[str, Any]) -> None:
    """Raise MissingExtra if a setting needs a package that is not installed (found without importing it)."""
    needs = [("redis", "redis"), ("django_redis", "redis"), ("max_rss", "psutil")]
    for key, module in needs:
        if values.get(key) is not None and not extras.installed(module):
            raise extras.missing(module, f"Q_CLUSTER['{key}']")


# With several broker keys, django-q2 used the first of these; so does Django Q
# (manage.py check warns about the others, see unused_broker_keys).
BROKER_PRECEDENCE = ("orm", "django_redis", "redis")


def unused_broker_keys(q_cluster: dict[str, Any]) -> list[str]:
    """The broker keys of Q_CLUSTER that another one overrides (BROKER_PRECEDENCE)."""
    present = [key for key in BROKER_PRECEDENCE if key in q_cluster]
    return present[1:]


def _for_cluster(raw: dict[str, Any], cluster: str | None) -> dict[str, Any]:
    """Q_CLUSTER as cluster `cluster` reads it: its ALT_CLUSTERS entry over the rest, as django-q2 did."""
    alt = raw.get("ALT_CLUSTERS")
    if alt is not None and not (isinstance(alt, dict) and all(isinstance(v, dict) for v in alt.values())):
        raise ConfigurationError(
            f"Q_CLUSTER['ALT_CLUSTERS'] must be a dict of {{cluster name: dict of Q_CLUSTER keys}}, got {alt!r}"
        )
    raw = {k: v for k, v in raw.items() if k != "ALT_CLUSTERS"}
    if not cluster or cluster in (raw.get("name"), raw.get("cluster_name")):
        return raw
    overrides = (alt or {}).get(cluster, {})
    return {**raw, **{k: v for k, v in overrides.items() if k not in ("name", "cluster_name")}, "cluster_name": cluster}


def _checked(key: str, value: Any, label: str) -> Any:
    check, must = _RULES[key]
    if not check(value):
        raise ConfigurationError(f"{label} must be {must}, got {value!r}")
    if key in ("timeout", "retry", "poll", "cancel_grace", "enqueue_timeout") and value is not None:
        return float(value)
    if key == "queues":
        return tuple(value)
    if key == "admin_funcs":
        refused = [entry for entry in value if guard.names_denied_module(entry)]
        if refused:
            raise ConfigurationError(f"{label} names what nobody may schedule ({', '.join(map(repr, refused))}: "
                                     f"{', '.join(sorted(guard.DENIED_MODULES))}), got {value!r}")
        return tuple(value)
    if key == "rate_limits":
        return rates.parse_limits(value, label)
    if key == "log_level" and isinstance(value, str):
        return value.upper()
    return value


def check_name(name: str) -> str:
    """Validate a cluster name given outside Q_CLUSTER (qcluster -n)."""
    return _checked("name", name, "the cluster name")


def ignored_keys() -> list[str]:
    """Keys of Q_CLUSTER that are accepted for compatibility but have no effect."""
    raw = getattr(settings, "Q_CLUSTER", None)
    return sorted(k for k in raw if k in IGNORED_KEYS) if isinstance(raw, dict) else []


def why_ignored(key: str) -> str:
    """The check warning of an ignored key: what django-q / django-q2 did with it, and why it is not needed."""
    return f"Q_CLUSTER['{key}'] is ignored: {oldsettings.UNNEEDED[key]}"



_config: Config | None = None


def get_config() -> Config:
    """The current Config, built on first use."""
    global _config
    if _config is None:
        _config = build_config()
    return _config


@receiver(setting_changed)
def _reset(setting: str, **_: Any) -> None:
    global _config
    if setting in SETTING_NAMES:
        _config = None
        package.reset_keys()
