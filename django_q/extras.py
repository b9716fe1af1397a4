"""The optional packages: which extra of django-q-cluster installs each, and the error when one is missing.

`pip install django-q-cluster` installs Django alone, which is all the
database broker needs. Every other package comes with an extra, and the code
that uses it imports it through `require` (a clear error naming the pip line)
or asks `installed` first (a feature that does without it).
"""

from __future__ import annotations

import importlib
from importlib.util import find_spec
from types import ModuleType

from .exceptions import MissingExtra

DISTRIBUTION = "django-q-cluster"

#: import name -> (the package on the package index, the extra that installs it)
PACKAGES: dict[str, tuple[str, str]] = {
    "redis": ("redis", "redis"),
    "rich": ("rich", "monitor"),
    "psutil": ("psutil", "monitor"),
    "setproctitle": ("setproctitle", "monitor"),
    "prometheus_client": ("prometheus-client", "metrics"),
    "croniter": ("croniter", "cron"),
}


def pip_line(module: str) -> str:
    """The command that installs `module`'s extra, e.g. pip install 'django-q-cluster[redis]'."""
    return f"pip install '{DISTRIBUTION}[{PACKAGES[module][1]}]'"


def missing(module: str, feature: str) -> MissingExtra:
    """The error for `feature`, which needs `module` and finds it missing."""
    return MissingExtra(f"{feature} needs the {PACKAGES[module][0]} package: {pip_line(module)}")


def require(module: str, feature: str) -> ModuleType:
    """Import `module` for `feature`, or raise MissingExtra naming the pip line of its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(module, feature) from exc


def installed(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False
