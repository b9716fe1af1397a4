"""One virtualenv per system under bench/.venvs/, made once with pinned versions.

Only the standard library is used here, so `run.py` can build the venvs before
it re-executes itself in this project's venv (which has psutil and redis).
"""

from __future__ import annotations

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

DJANGO = "Django==5.2.19"
REDIS = ["hiredis==3.5.0"]
# redis-py where the package leaves it open (Celery and Dramatiq pin their own range;
# the JSON records what each venv resolved).
REDIS_PY = "redis==8.1.0"
POSTGRES = "psycopg[binary]==3.3.9"

# system -> pip requirements. The peers get hiredis too, so every Redis client
# parses replies the same way. Newer majors exist on PyPI (rq 3, huey 3,
# dramatiq 2); these are the lines the benchmark brief names.
PINS: dict[str, list[str]] = {
    "django-q": [f"-e{REPO}[hiredis,postgres]", DJANGO, REDIS_PY, *REDIS, POSTGRES, "psutil==7.2.2", "py-spy==0.4.3"],
    "django-q2": ["django-q2==1.11.1", DJANGO, REDIS_PY, *REDIS, POSTGRES],
    "celery": ["celery[redis]==5.7.0", *REDIS],
    "rq": ["rq==2.12.0", REDIS_PY, *REDIS],
    "huey": ["huey==2.6.0", REDIS_PY, *REDIS],
    "dramatiq": ["dramatiq[redis]==1.18.0", *REDIS],
}

PYTHON = os.environ.get("BENCH_PYTHON", "python3")

# system name (django-q@<short hash>) -> full commit hash, for --baseline.
BASELINES: dict[str, str] = {}


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
    editable with the same extras, as ours installs the work tree.
    """
    name = f"django-q@{git('rev-parse', '--short', commit)}"
    ours = PINS["django-q"]
    assert ours[0].startswith(f"-e{REPO}["), ours[0]
    PINS[name] = [f"-e{source(commit)}{ours[0][len(f'-e{REPO}'):]}", *ours[1:]]
    BASELINES[name] = commit
    return name


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


def _stamp(system: str) -> str:
    return hashlib.sha256(json.dumps(PINS[system]).encode()).hexdigest()[:16]


def ensure(system: str, log=print) -> Path:
    """The venv's python, creating or updating the venv if its pins changed."""
    root = VENVS / system
    stamp = root / ".pins"
    if stamp.exists() and stamp.read_text() == _stamp(system) and python(system).exists():
        return python(system)
    log(f"==> creating bench venv {system} ({' '.join(PINS[system])})")
    if not python(system).exists():
        subprocess.run([PYTHON, "-m", "venv", str(root)], check=True)
    version = subprocess.run(
        [str(python(system)), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    if version != "3.11":
        log(f"    warning: {system} venv runs Python {version}, not 3.11")
    _pip(system, "--upgrade", "pip")
    _pip(system, *PINS[system])
    stamp.write_text(_stamp(system))
    return python(system)


def compile_project(system: str = "django-q") -> None:
    """Write the bytecode of this project's package, as pip does for the peers it installs.

    Ours is installed editable, so pip compiles none of it, and the processes
    the bench starts run with PYTHONDONTWRITEBYTECODE: without this every
    cluster would compile django_q from source before its first task (about
    50 ms of its start). Only files changed since the last run are compiled.
    A --baseline system's package (its folder under src/) is compiled the same way.
    """
    root = source(BASELINES[system]) if system in BASELINES else REPO
    subprocess.run([str(python(system)), "-m", "compileall", "-q", str(root / "django_q")], check=True)


def _pip(system: str, *args: str) -> None:
    """pip install, without this machine's warnings about missing local index folders."""
    proc = subprocess.run(
        [str(python(system)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True, text=True,
    )
    noise = ("is ignored: it is neither a file nor a directory", "BuildBackendWarning", "!!", "****")
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
