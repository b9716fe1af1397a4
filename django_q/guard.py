"""Which functions a schedule may name: the deny list that holds for everyone, and the admin's allow list.

A schedule row is code the cluster will run. Rows written in the admin are
the ones a web session (possibly a stolen one, or staff with only the add
permission) can create, so:

- Nobody may name a function of DENIED_MODULES, through the admin, through
  `Schedule.full_clean()`, or at all: the scheduler refuses such a row even
  when it was written with SQL, and "run now" refuses it too.
- An editor who is not a superuser may only name a function listed in
  `Q_CLUSTER["admin_funcs"]` (dotted paths, or module prefixes ending in
  ".") or one an existing schedule already names.

A path is denied by what it names and by what it resolves to: "os.system"
and "logging.os.system" both reach `posix.system`, and every module a path
walks through is checked, so re-exports do not slip through.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

DENIED_MODULES = frozenset(
    {"builtins", "os", "subprocess", "shutil", "pty", "importlib", "code", "pickle", "marshal", "ctypes", "sys"}
)
# The C modules behind some of them: os.system is posix.system, pickle.loads is _pickle.loads.
DENIED_IMPLEMENTATIONS = frozenset({"posix", "nt", "_posixsubprocess", "_pickle", "_ctypes", "_imp", "_io"})
_DENIED = DENIED_MODULES | DENIED_IMPLEMENTATIONS


def _top(module_name: str | None) -> str:
    return (module_name or "").split(".")[0]


def names_denied_module(path: str) -> bool:
    """Whether `path` (a dotted path or a prefix) starts with a denied module's name; nothing is imported."""
    return _top(path) in _DENIED


def denied(path: str) -> str | None:
    """Why nobody may schedule `path` (a function of a denied module), or None."""
    why = f"{path!r} is a function of a module nobody may schedule ({', '.join(sorted(DENIED_MODULES))})"
    if names_denied_module(path):
        return why
    for obj in _walk(path):
        if inspect.ismodule(obj) and _top(obj.__name__) in _DENIED:
            return why
        module = getattr(obj, "__module__", None)
        if not inspect.ismodule(obj) and isinstance(module, str) and _top(module) in _DENIED:
            return why
    return None


def _walk(path: str) -> list[Any]:
    """The objects `path` passes through when imported (its modules, then each attribute); [] if it does not import."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except Exception:  # noqa: BLE001, S112 - importing runs the module's code: anything can go wrong
            continue
        seen = [obj]
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return seen
            seen.append(obj)
        return seen
    return []


def listed(path: str, entries: Iterable[str]) -> bool:
    """Whether `path` is one of `entries`: a dotted path equal to it, or a module prefix ending in '.' it starts with."""
    return any(path == entry or (entry.endswith(".") and path.startswith(entry)) for entry in entries)


def refusal(path: str, superuser: bool, entries: Iterable[str], named: Callable[[str], bool]) -> str | None:
    """Why an editor may not schedule `path`, or None.

    `superuser`: whether the editor is one; `entries`: Q_CLUSTER["admin_funcs"];
    `named(path)`: whether an existing schedule already names the function.
    A path that is not allowed is refused before anything is imported: a
    module's import runs its code.
    """
    if not superuser and not (listed(path, entries) or named(path)):
        if names_denied_module(path):
            return denied(path)
        return (f"{path!r} is not a function staff may schedule: add it to Q_CLUSTER['admin_funcs'], "
                "or ask a superuser")
    return denied(path)


def offered(entries: Iterable[str], named: Iterable[str]) -> list[str]:
    """The functions the admin offers: the dotted paths of `entries`, the functions of modules
    `entries` name as prefixes, and those existing schedules name; none of a denied module."""
    found: set[str] = set(named)
    for entry in entries:
        if not entry.endswith("."):
            found.add(entry)
            continue
        try:
            module = importlib.import_module(entry[:-1])
        except Exception:  # noqa: BLE001, S112 - a prefix of several modules, or a module that fails to import
            continue
        found.update(f"{entry}{name}" for name, obj in vars(module).items()
                     if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module.__name__)
    return sorted(path for path in found if not denied(path))
