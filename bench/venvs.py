"""One virtualenv per system under bench/.venvs/, made once with pinned versions.

Only the standard library is used here, so `run.py` can build the venvs before
it re-executes itself in this project's venv (which has psutil and redis).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"
SOURCES = VENVS / "src"  # src/<commit>: this repository as it was at a --baseline commit (git archive)

# Every system is installed as its documentation says, at its release current
# on 2026-12-03, with the extras its docs name for the broker and no others:
# no system gets hiredis (ours neither), and no Redis client is pinned, so each
# resolves what `pip install <name>` gives a user (the JSON records it). The
# Django systems share one Django; the PostgreSQL ones one driver, psycopg's
# binary build (our `[postgres]` extra, what psycopg's docs name for a plain
# install; procrastinate's own `psycopg[pool]` dependency resolves to it too).
DJANGO = "Django==6.1.3"  # django.tasks (django-tasks-db) needs Django 6, so Python 3.12
POSTGRES = "psycopg[binary]==3.3.9"
BENCH_REDIS = "redis==8.1.0"  # the harness's own client
# The counter client of the database peers' task bodies (jobs.py): unpinned like every Redis system's,
# so that a new venv counts with the redis-py our database broker's workers count with.
COUNTER_REDIS = "redis"

# system -> pip requirements. Ours is `pip install .[redis,postgres]` from the work
# tree, not editable: a user's install (pip compiles it, as it does the peers'),
# with the extras the installation docs name for Redis and PostgreSQL (redis-py
# came with Django alone before it became the [redis] extra).
PINS: dict[str, list[str]] = {
    "django-q": [f"{REPO}[redis,postgres]", DJANGO],
    "django-q2": ["django-q2==1.11.1", "redis", DJANGO, POSTGRES],  # its docs: pip install django-q2, redis for Redis
    "celery": ["celery[redis]==5.7.0"],
    "rq": ["rq==3.0.0"],
    "huey": ["huey[redis]==3.5.4"],
    "dramatiq": ["dramatiq[redis]==2.2.1"],
    # saq 0.26.4 imports typing_extensions without declaring it: a plain install fails at import.
    "saq": ["saq[redis]==0.26.4", "typing_extensions"],
    # The database peers need no Redis client; the bench's task bodies count runs with one.
    "procrastinate": ["procrastinate==3.10.0", POSTGRES, COUNTER_REDIS],
    "django-tasks-db": ["django-tasks-db==0.13.0", DJANGO, POSTGRES, COUNTER_REDIS],
    # The harness itself (run.py re-executes in it): none of the systems' venvs carry its tools.
    "harness": ["psutil==7.2.2", BENCH_REDIS, POSTGRES, "py-spy==0.4.3"],
}
OWN_SOURCE = "django-q"  # installed from a folder: reinstalled whenever that folder's package changes

# system name (django-q@<short hash>) -> full commit hash, for --baseline.
BASELINES: dict[str, str] = {}
PYTHON_VERSION = "3.12"


def find_python() -> str:
    """The interpreter every venv is made with: $BENCH_PYTHON, else a Python 3.12 on PATH or under pyenv."""
    if os.environ.get("BENCH_PYTHON"):
        return os.environ["BENCH_PYTHON"]
    candidates = [shutil.which(f"python{PYTHON_VERSION}") or ""]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{PYTHON_VERSION}.*/bin/python{PYTHON_VERSION}"))
    for candidate in filter(None, candidates):
        ok = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                            capture_output=True, text=True)
        if ok.returncode == 0 and ok.stdout.strip() == PYTHON_VERSION:
            return candidate
    raise SystemExit(f"bench: no Python {PYTHON_VERSION} found (Django 6's django.tasks needs it); set BENCH_PYTHON")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def resolve(ref: str) -> str:
    """The full hash of the commit REF names (ValueError if none)."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ValueError(f"{ref!r} names no commit of {REPO}") from None


def add_baseline(commit: str) -> str:
    """Register the system django-q@<short hash>: ours' pins, but this package as it was at `commit`.

    Its venv, bench/.venvs/django-q@<short hash>, installs bench/.venvs/src/<commit>
    with the same extras, as ours installs the work tree (`pip install`, not editable).
    """
    name = f"django-q@{git('rev-parse', '--short', commit)}"
    ours = PINS["django-q"]
    assert ours[0].startswith(f"{REPO}["), ours[0]
    PINS[name] = [f"{source(commit)}{ours[0][len(str(REPO)):]}", *ours[1:]]
    BASELINES[name] = commit
    return name


def take_baseline(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Set opts.baseline_system (None without --baseline) and opts.baseline_commit from opts.baseline.

    REF is resolved once, before the re-exec into the harness venv (which finds it in
    $BENCH_BASELINE_COMMIT): main, HEAD~1 ... may move during the run.
    """
    opts.baseline_system = None
    if opts.baseline is None:
        return
    commit = os.environ.get("BENCH_BASELINE_COMMIT") if os.environ.get("BENCH_IN_VENV") == "1" else None
    if not commit:
        try:
            commit = resolve(opts.baseline)
        except ValueError as exc:
            parser.error(f"--baseline: {exc}")
    opts.baseline_commit = commit
    opts.baseline_system = add_baseline(commit)


def source(commit: str) -> Path:
    return SOURCES / commit


def export(commit: str, log=print) -> Path:
    """bench/.venvs/src/<commit>: the tree of `commit` (git archive), made once; the work tree and branches are untouched."""
    folder = source(commit)
    if folder.is_dir():
        return folder
    log(f"==> exporting {commit[:12]} to {folder}")
    tmp = SOURCES / f".{commit}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=REPO, stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout)
    archive.stdout.close()
    if archive.wait() or untar.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"git archive {commit} | tar -x failed")
    tmp.rename(folder)  # complete or absent: a folder that exists was fully extracted
    return folder


def python(system: str) -> Path:
    return VENVS / system / "bin" / "python"


def package_root(system: str) -> Path | None:
    """The folder ours (or a --baseline) is installed from; None for a peer from the package index."""
    if system in BASELINES:
        return source(BASELINES[system])
    return REPO if system == OWN_SOURCE else None


def source_hash(root: Path) -> str:
    """A hash of the package's files (django_q/ and pyproject.toml) as they are on disk now."""
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", *sorted((root / "django_q").rglob("*"))]
    for f in files:
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
            digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _stamp(system: str) -> str:
    return hashlib.sha256(json.dumps(PINS[system]).encode()).hexdigest()[:16]


def ensure(system: str, log=print) -> Path:
    """The venv's python, creating or updating the venv if its pins (or, for ours, its package files) changed."""
    root = VENVS / system
    stamp = root / ".pins"
    if not (stamp.exists() and stamp.read_text() == _stamp(system) and python(system).exists()):
        log(f"==> creating bench venv {system} ({' '.join(PINS[system])})")
        if python(system).exists() and venv_version(system) != PYTHON_VERSION:
            # Made by an older bench on another Python: its pins would not install there.
            log(f"    {system} venv runs Python {venv_version(system)}, not {PYTHON_VERSION}: made anew")
            shutil.rmtree(root)
        if not python(system).exists():
            subprocess.run([find_python(), "-m", "venv", str(root)], check=True)
        version = venv_version(system)
        if version != PYTHON_VERSION:
            log(f"    warning: {system} venv runs Python {version}, not {PYTHON_VERSION}")
        package = package_root(system)
        before = source_hash(package) if package is not None else ""
        _pip(system, "--upgrade", "pip")
        _pip(system, *PINS[system])
        stamp.write_text(_stamp(system))
        (root / ".source").write_text(before)
    package = package_root(system)
    if package is not None:
        # Not editable, as a user installs it: the venv holds a copy, made again
        # whenever the package's files differ from the copy's.
        marker, now = root / ".source", source_hash(package)
        if not (marker.exists() and marker.read_text() == now):
            log(f"==> installing {package} into bench venv {system} (pip install, not editable)")
            # pip always rebuilds and reinstalls a folder; dependencies the
            # pyproject.toml added since are installed, the others kept.
            _pip(system, *PINS[system])
            marker.write_text(now)
    return python(system)


def venv_version(system: str) -> str:
    """'3.12', say: the Python of `system`'s venv."""
    return subprocess.run(
        [str(python(system)), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def _pip(system: str, *args: str) -> None:
    """pip install, without this machine's warnings about missing local index folders."""
    proc = subprocess.run(
        [str(python(system)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True, text=True,
    )
    noise = ("is ignored: it is neither a file nor a directory", "BuildBackendWarning", "!!", "****", "SPDX",
             "By 2027", "or your builds", "packaging.python.org", "corresp(")
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip() and not any(n in line for n in noise):
            print("   ", line)
    if proc.returncode != 0:
        raise SystemExit(f"pip install into bench/.venvs/{system} failed")


def freeze(system: str) -> dict[str, str]:
    """name -> version of what the venv holds."""
    out = subprocess.run(
        [str(python(system)), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True, text=True,
    ).stdout
    try:
        return {p["name"].lower(): p["version"] for p in json.loads(out)}
    except ValueError:
        return {}


if __name__ == "__main__":
    for name in sys.argv[1:] or PINS:
        ensure(name)
