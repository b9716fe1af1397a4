"""What is benchmarked: a Target is one system on one broker (and, where it stores in a database, one database).

Each target knows the environment of its processes, the command that starts
its workers (2 worker processes, each system's own concurrency inside them),
the driver command that enqueues into it, and its W5 redelivery setting.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import venvs

BENCH = venvs.BENCH
BROKER_URL = "redis://127.0.0.1:6379/12"
COUNTER_URL = "redis://127.0.0.1:6379/15"
# Each system's own PostgreSQL database, dropped and created by every run.
PG_NAMES = {"django-q": "dq_bench", "django-q2": "dq2_bench", "django-tasks-db": "djtasks_bench",
            "procrastinate": "procrastinate_bench"}
BASELINE_PG_NAME = "dq_bench_base"  # the --baseline system's own database
SETTINGS = {"django-q": "djproject.settings.djq", "django-q2": "djproject.settings.djq2",
            "django-tasks-db": "djproject.settings.djtasks"}
Q_FAMILY = ("django-q", "django-q2")  # the systems with a qcluster and Q_CLUSTER
OURS = "django-q"
RQ_WORKER: list[str] = []  # e.g. ["-w", "rq.worker.SimpleWorker"]: no fork per job
REDIS_PEERS = ("django-q2", "celery", "rq", "huey", "dramatiq", "saq")
# Peers that store their queue in a database, and the databases each supports.
DB_PEERS = {"procrastinate": ("postgres",), "django-tasks-db": ("sqlite", "postgres")}
PEERS = (*REDIS_PEERS, *DB_PEERS)
WORKERS = 2


def is_baseline(system: str) -> bool:
    """django-q@<hash>: this package as it was at the --baseline commit, in its own venv."""
    return system.startswith(OURS + "@")


def family(system: str) -> str:
    """The system the settings and the driver know: a baseline is run exactly as ours."""
    return OURS if is_baseline(system) else system


def pg_name(system: str) -> str:
    return BASELINE_PG_NAME if is_baseline(system) else PG_NAMES[system]


def pg_dsn(system: str) -> str:
    return f"host=127.0.0.1 user=postgres dbname={pg_name(system)}"


@dataclass(frozen=True)
class Target:
    system: str  # the venv: django-q (ours), django-q@<hash> (--baseline), or a peer of PEERS
    broker: str = "redis"  # "redis"; "orm" for the Django Q family's database broker; "db" for DB_PEERS
    db: str | None = None  # "sqlite" or "postgres" where the system stores in a database, else None
    save_limit: int | None = None  # Q_CLUSTER["save_limit"]; None keeps the system's default
    redelivery: int | None = None  # W5: seconds after which a killed task is delivered again (see redelivery_setting)

    @property
    def django(self) -> bool:
        """A Django project: settings module, a database, `migrate`."""
        return family(self.system) in SETTINGS

    @property
    def q_family(self) -> bool:
        return family(self.system) in Q_FAMILY

    @property
    def stores(self) -> bool:
        """Has a database to migrate and empty before each run."""
        return self.django or self.system in DB_PEERS

    @property
    def label(self) -> str:
        """How the table names the target, e.g. django-q redis/pg, django-q orm/sqlite, django-tasks-db pg."""
        store = {"sqlite": "sqlite", "postgres": "pg"}[self.db or "sqlite"]
        if self.system in DB_PEERS:
            return f"{self.system} {store}"
        if not self.django:
            return f"{self.system} redis"
        return f"{self.system} {self.broker}/{store}"

    @property
    def ours_label(self) -> str:
        """The label of our target on the same broker and database, for the peer/ours ratio."""
        if self.system in DB_PEERS:
            return Target(OURS, "orm", self.db).label
        return Target(OURS, self.broker, self.db if self.django else None).label

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
        if self.stores:
            env.update(
                BENCH_DB=self.db or "sqlite",
                BENCH_SQLITE=str(scratch / f"{self.system}.sqlite3"),
                BENCH_PG_NAME=pg_name(self.system),
                BENCH_PG_DSN=pg_dsn(self.system),
            )
        if self.django:
            env.update(DJANGO_SETTINGS_MODULE=SETTINGS[family(self.system)], BENCH_BROKER=self.broker)
            if self.save_limit is not None:
                env["BENCH_SAVE_LIMIT"] = str(self.save_limit)
        if self.redelivery is not None:
            env["BENCH_REDELIVERY"] = str(self.redelivery)
        return env

    def python(self) -> str:
        return str(venvs.python(self.system))

    def _bin(self, name: str) -> str:
        return str(venvs.python(self.system).parent / name)

    def worker_cmd(self) -> list[str]:
        """The command that starts this system's 2 worker processes in the foreground."""
        if self.q_family:
            return [self.python(), "-m", "django", "qcluster"]
        if self.system == "celery":
            # Gossip, mingle and heartbeats only slow the start and talk to other workers.
            return [self._bin("celery"), "-A", "peers.celery_app", "worker", "-c", str(WORKERS), "-P", "prefork",
                    "-Q", "bench", "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        if self.system == "rq":
            return [self._bin("rq"), "worker-pool", "-n", str(WORKERS), "-u", BROKER_URL, "-l", "WARNING", *RQ_WORKER,
                    "bench"]
        if self.system == "huey":
            return [self._bin("huey_consumer"), "peers.huey_app.huey", "-w", str(WORKERS), "-k", "process", "-q"]
        if self.system == "dramatiq":
            return [self._bin("dramatiq"), "peers.dramatiq_app", "-p", str(WORKERS), "-t", "8", "-Q", "bench"]
        if self.system == "saq":
            return [self._bin("saq"), "peers.saq_app.settings", "--workers", str(WORKERS)]
        # One worker process per command: started twice, in one process group.
        if self.system == "procrastinate":
            return twice([self._bin("procrastinate"), "--app=peers.procrastinate_app.app", "worker"])
        if self.system == "django-tasks-db":
            return twice([self.python(), "-m", "django", "db_worker"])
        raise ValueError(self.system)

    def worker_summary(self) -> str:
        """The worker command as the table prints it (venv paths cut), with the settings that differ from defaults."""
        cmd = self.worker_cmd()
        if cmd[0] == "/bin/sh":  # twice(): one worker per command
            prefix, cmd = f"{WORKERS} x ", shlex.split(cmd[2].split(" & exec ")[-1])
        else:
            prefix = ""
        line = prefix + shlex.join([Path(cmd[0]).name, *cmd[1:]])
        if self.q_family:
            line += f"; Q_CLUSTER workers={WORKERS}"
            if family(self.system) == "django-q2":
                line += ", timeout=30, log_level=WARNING"
            if self.save_limit is not None:
                line += f", save_limit={self.save_limit}"
        return line

    def driver_cmd(self, *args: str) -> list[str]:
        return [self.python(), str(BENCH / "driver.py"), family(self.system), *args]

    def redelivery_setting(self) -> str:
        """W5: what this target does with a task whose worker was killed mid-run, as configured."""
        r = self.redelivery
        system = family(self.system)
        if system == OURS:
            return f"retry={r} s" if r is not None else "retry=60 s (default)"
        if system == "django-q2":
            # Its Redis broker pops a task for good: retry acts on its database broker only.
            return (f"retry={r} s, timeout={max(1, r - 2)} s (its Redis broker does not redeliver)" if r is not None
                    else "retry=60 s (default)")
        if system == "celery":
            return (f"acks_late, visibility_timeout={r} s, unacked scan every 1 s" if r is not None
                    else "acks early (default): a killed task is not run again")
        if system == "dramatiq":
            return (f"heartbeat_timeout={r} s, maintenance_chance=10 %" if r is not None
                    else "heartbeat_timeout=60 s, maintenance_chance=0.1 % (defaults)")
        if system == "saq":
            return (f"job timeout={r} s, retries=2, sweep every {r} s" if r is not None
                    else "timeout=10 s, retries=1, sweep every 60 s (defaults)")
        if system == "rq":
            return "none: RQ moves a killed job to its failed registry"
        if system == "huey":
            return "none: Huey does not run a killed task again"
        return "not measured"


def twice(cmd: list[str]) -> list[str]:
    """A shell that starts `cmd` WORKERS times; the last replaces the shell, so the group's leader is a worker."""
    line = shlex.join(cmd)
    return ["/bin/sh", "-c", " & ".join([line] * (WORKERS - 1)) + f" & exec {line}"]


def redis_targets(systems: list[str]) -> list[Target]:
    return [Target(s) for s in systems if s not in DB_PEERS]


def orm_targets(systems: list[str]) -> list[Target]:
    """The database broker of the Django Q family, and the database peers, on SQLite and PostgreSQL."""
    out = []
    for db in ("sqlite", "postgres"):
        out += [Target(s, "orm", db) for s in systems if family(s) in Q_FAMILY]
        out += [Target(s, "db", db) for s in systems if db in DB_PEERS.get(s, ())]
    return out


def results_targets(systems: list[str]) -> list[Target]:
    """W2b: Redis broker, every result kept in SQLite or PostgreSQL."""
    return [Target(s, "redis", db, save_limit=0) for db in ("sqlite", "postgres") for s in systems
            if family(s) in Q_FAMILY]
