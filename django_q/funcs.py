"""Functions by dotted path: import one, and name one so that a worker can import it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .exceptions import TaskTypeError


def resolve(path: str) -> Any:
    """Import a dotted path to a module attribute (nested attributes allowed)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ImportError(f"cannot import {path!r}")


def callable_path(func: Any) -> str:
    """A readable dotted path for any callable (functions, methods, callable objects)."""
    module = getattr(func, "__module__", None) or type(func).__module__
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}"


def path_of(func: Callable | str, what: str) -> str:
    """The importable dotted path of a plain function, or a TaskTypeError saying why it has none."""
    if isinstance(func, str):
        return func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is None:
        raise TaskTypeError(f"{what} {func!r} has no name; pass a module-level function or a dotted path")
    if getattr(func, "__name__", "") == "<lambda>":
        raise TaskTypeError(f"{what} is a lambda; the cluster can only import module-level functions")
    if "<locals>" in name:
        raise TaskTypeError(f"{what} {name} is defined inside a function; the cluster cannot import it")
    module = getattr(func, "__module__", None)
    if not module or module == "__main__":
        raise TaskTypeError(f"{what} {name} is defined in __main__; move it to a module the cluster can import")
    path = f"{module}.{name}"
    if resolve(path) is not func:
        raise TaskTypeError(f"{what} {name} is not importable as {path}")
    return path


def importable(path: str) -> str | None:
    """Why the dotted path `path` is not an importable callable, or None."""
    try:
        obj = resolve(path)
    except Exception as exc:  # importing runs the module's code: anything can go wrong
        return f"{path!r} cannot be imported: {type(exc).__name__}: {exc}"
    return None if callable(obj) else f"{path!r} is not callable"
