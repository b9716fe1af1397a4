"""What is benchmarked: a Target is one system on one broker (and, for the Django Q family, one database).

Each target knows the environment of its processes, the command that starts
its workers (2 worker processes; Dramatiq 2 processes x 8 threads), and the
driver command that enqueues into it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import venvs

BENCH = venvs.BENCH
BROKER_URL = "redis://127.0.0.1:6379/12"
COUNTER_URL = "redis://127.0.0.1:6379/15"
PG_NAMES = {"django-q": "dq_bench", "django-q2": "dq2_bench"}
BASELINE_PG_NAME = "dq_bench_base"  # the --baseline system's own database
SETTINGS = {"django-q": "djproject.settings.djq", "django-q2": "djproject.settings.djq2"}
OURS = "django-q"
RQ_WORKER: list[str] = []  # e.g. ["-w", "rq.worker.SimpleWorker"]: no fork per job
PEERS = ("django-q2", "celery", "rq", "huey", "dramatiq")


def is_baseline(system: str) -> bool:
    """django-q@<hash>: this package as it was at the --baseline commit, in its own venv."""
    return system.startswith(OURS + "@")


def family(system: str) -> str:
    """The system the settings and the driver know: a baseline is run exactly as ours."""
    return OURS if is_baseline(system) else system


def pg_name(system: str) -> str:
    return BASELINE_PG_NAME if is_baseline(system) else PG_NAMES[system]


@dataclass(frozen=True)
class Target:
    system: str  # the venv: django-q (ours), django-q@<hash> (--baseline), django-q2, celery, rq, huey, dramatiq
    broker: str = "redis"  # "redis", or "orm" for the Django Q family's database broker
    db: str | None = None  # "sqlite" or "postgres" for the Django Q family, else None
    save_limit: int | None = None  # Q_CLUSTER["save_limit"]; None keeps the system's default
    retry: int | None = None  # Q_CLUSTER["retry"], seconds; None keeps the default

    @property
    def django(self) -> bool:
        return family(self.system) in SETTINGS

    @property
    def label(self) -> str:
        """How the table names the target, e.g. django-q redis/pg, django-q orm/sqlite, django-q@1de129c redis/sqlite."""
        if not self.django:
            return f"{self.system} redis"
        store = {"sqlite": "sqlite", "postgres": "pg"}[self.db or "sqlite"]
        return f"{self.system} {self.broker}/{store}"

    def with_(self, **changes: object) -> "Target":
        return Target(**{**self.__dict__, **changes})

    def env(self, scratch: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "DJANGO_", "Q_"))}
        env.update(
            PYTHONPATH=str(BENCH),
            PYTHONDONTWRITEBYTECODE="1",
            BENCH_BROKER_URL=BROKER_URL,
            BENCH_COUNTER_URL=COUNTER_URL,
            TMPDIR=str(scratch),  # Django Q's sentinel keeps its socket folder here
        )
        if self.django:
            env.update(
                DJANGO_SETTINGS_MODULE=SETTINGS[family(self.system)],
                BENCH_BROKER=self.broker,
                BENCH_DB=self.db or "sqlite",
                BENCH_SQLITE=str(scratch / f"{self.system}.sqlite3"),
                BENCH_PG_NAME=pg_name(self.system),
            )
            if self.save_limit is not None:
                env["BENCH_SAVE_LIMIT"] = str(self.save_limit)
            if self.retry is not None:
                env["BENCH_RETRY"] = str(self.retry)
        return env

    def python(self) -> str:
        return str(venvs.python(self.system))

    def _bin(self, name: str) -> str:
        return str(venvs.python(self.system).parent / name)

    def worker_cmd(self) -> list[str]:
        """The command that starts 2 workers of this system in the foreground."""
        if self.django:
            return [self.python(), "-m", "django", "qcluster"]
        if self.system == "celery":
            # Gossip, mingle and heartbeats only slow the start and talk to other workers.
            return [self._bin("celery"), "-A", "peers.celery_app", "worker", "-c", "2", "-P", "prefork",
                    "-Q", "bench", "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        if self.system == "rq":
            return [self._bin("rq"), "worker-pool", "-n", "2", "-u", BROKER_URL, "-l", "WARNING", *RQ_WORKER, "bench"]
        if self.system == "huey":
            return [self._bin("huey_consumer"), "peers.huey_app.huey", "-w", "2", "-k", "process", "-q"]
        if self.system == "dramatiq":
            return [self._bin("dramatiq"), "peers.dramatiq_app", "-p", "2", "-t", "8", "-Q", "bench"]
        raise ValueError(self.system)

    def driver_cmd(self, *args: str) -> list[str]:
        return [self.python(), str(BENCH / "driver.py"), family(self.system), *args]


def redis_targets(systems: list[str]) -> list[Target]:
    return [Target(s) for s in systems]


def orm_targets(systems: list[str]) -> list[Target]:
    """The database broker of the Django Q family, on SQLite and PostgreSQL."""
    return [Target(s, "orm", db) for db in ("sqlite", "postgres") for s in systems if family(s) in SETTINGS]


def results_targets(systems: list[str]) -> list[Target]:
    """W2b: Redis broker, every result kept in SQLite or PostgreSQL."""
    return [Target(s, "redis", db, save_limit=0) for db in ("sqlite", "postgres") for s in systems if family(s) in SETTINGS]
