"""Error reporters: plugins of the `djangoq.errorreporters` entry-point group, such as django-q-sentry.

Configured as in django-q2: `Q_CLUSTER["error_reporter"] = {"sentry": {"dsn":
...}}` names an entry point of the group and the keyword arguments its class
is made with. A reporter's `report()` is called with no arguments while the
failure is the exception being handled, as django-q2 calls it: the plugins
read it from `sys.exc_info()`. Each process makes its reporters on first use;
a forked worker inherits those the sentinel made at start (`qcluster` checks
that they can be made).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from .conf import Config
from .exceptions import ConfigurationError

GROUP = "djangoq.errorreporters"

logger = logging.getLogger("django_q")

# (the error_reporter setting, the reporters made from it) in this process
_made: tuple[dict, list[Any]] | None = None


def missing(config: Config) -> list[str]:
    """A sentence for each configured reporter that no installed package registers."""
    return [
        f"Q_CLUSTER['error_reporter']['{name}']: no installed package registers '{name}' in the "
        f"'{GROUP}' entry-point group (such as django-q-{name}), so failures are not reported to it"
        for name in (config.error_reporter or {})
        if not _points(name)
    ]


def _points(name: str) -> Any:
    """The entry points of GROUP called `name`."""
    # importlib.metadata is imported only when reporters are configured: it
    # takes about 20 ms of every process start, with zipfile, csv and email.
    from importlib.metadata import entry_points

    return entry_points(group=GROUP, name=name)


def load(config: Config) -> list[Any]:
    """The reporters of `config`, made once per process and setting.

    Raises ConfigurationError naming the reporter whose class cannot be
    imported or made with its options. A name no package registers is left
    out (`missing` says which).
    """
    global _made
    setting = config.error_reporter or {}
    if _made is not None and _made[0] == setting:
        return _made[1]
    reporters = []
    for name, options in setting.items():
        for point in _points(name):
            try:
                reporters.append(point.load()(**options))
            except Exception as exc:
                raise ConfigurationError(
                    f"Q_CLUSTER['error_reporter']['{name}']: its reporter {point.value} cannot be made: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
    _made = (copy.deepcopy(setting), reporters)
    return reporters


def report(config: Config, error: BaseException) -> None:
    """Hand a failure to every configured reporter; a reporter that fails is logged, never raised."""
    if not config.error_reporter:
        return
    try:
        reporters = load(config)
    except ConfigurationError as exc:
        global _made
        logger.error("%s; failures are not reported to it", exc)
        _made = (copy.deepcopy(config.error_reporter), [])  # said once per process, not once per failure
        return
    for reporter in reporters:
        try:
            _hand_over(reporter, error)
        except Exception:
            logger.exception("error reporter %s failed", type(reporter).__name__)


def _hand_over(reporter: Any, error: BaseException) -> None:
    """Call `reporter.report()` with `error` as the exception being handled."""
    try:
        raise error
    except BaseException:
        reporter.report()
