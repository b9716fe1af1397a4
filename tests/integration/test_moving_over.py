"""A project moves over from django-q2 1.11 / django-q 1.3: its database, its queued tasks, its schedules.

The old package is installed from the package index into a throwaway
virtualenv (made once per machine, kept under /tmp, one per package version
and Python). There the old project makes its database (finished tasks,
schedules, tasks queued in the database and in Redis, packages signed with
another key), then the same project, same SECRET_KEY and same database, runs
our `migrate`, `qinfo` and `qcluster` in subprocesses. The database is the
default database's server (SQLite, PostgreSQL or MariaDB: DQ_DEFAULT_DB).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings

import django_q

PROJECT = Path(__file__).with_name("legacy_project")
VENVS = Path("/tmp/django_q_legacy_venvs")
SECRET = "the-secret-key-both-sides-share"
# What each old version needs beside itself (django-q 1.3 runs on Django 3.2, not on 5.x).
OLD = {
    "django-q2==1.11.1": ["Django>=5.2,<6.1", "redis>=5,<8", "croniter>=2,<7", "psycopg[binary]>=3.1,<4",
                          "PyMySQL>=1.1,<2"],
    "django-q==1.3.9": ["Django>=3.2,<4", "redis>=3.5,<4", "croniter>=0.3.34,<2", "psycopg2-binary>=2.9,<3",
                        "PyMySQL>=1.1,<2", "setuptools<81"],  # setuptools: Django 3.2 imports distutils
}
WAIT = 90.0  # seconds for a cluster to run what the test waits for (a busy 2-core machine)
PIP_TIMEOUT = 600.0


def old_python(spec: str) -> Path:
    """The Python of a virtualenv with `spec` installed, made on first use (one maker at a time, across processes)."""
    VENVS.mkdir(parents=True, exist_ok=True)
    venv = VENVS / f"{spec.replace('==', '-')}-py{sys.version_info.major}{sys.version_info.minor}"
    stamp = venv / "installed"
    with open(VENVS / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 spec, *OLD[spec]],
                check=True, timeout=PIP_TIMEOUT, capture_output=True,
            )
            stamp.touch()
    return venv / "bin" / "python"


class Database:
    """A database of its own on the default database's server, dropped after the test."""

    def __init__(self, tmp: Path, label: str) -> None:
        default = settings.DATABASES["default"]
        self.engine = default["ENGINE"]
        self.name = f"dq_legacy_{settings.RUN_ID}_{label}_{uuid.uuid4().hex[:6]}".lower()
        if "sqlite" in self.engine:
            self.conf = {"ENGINE": self.engine, "NAME": str(tmp / f"{label}.sqlite3")}
            return
        self.conf = {k: default[k] for k in ("ENGINE", "USER", "HOST", "PORT")}
        self.conf["NAME"] = self.name
        if "mysql" in self.engine:
            self.conf["OPTIONS"] = {"charset": "utf8mb4"}
        self._admin(f"CREATE DATABASE {self.name}")

    def drop(self) -> None:
        if "sqlite" not in self.engine:
            self._admin(f"DROP DATABASE IF EXISTS {self.name}" + (" WITH (FORCE)" if "postgres" in self.engine else ""))

    def _admin(self, sql: str) -> None:
        if "postgres" in self.engine:
            import psycopg

            with psycopg.connect(host=self.conf["HOST"], port=self.conf["PORT"], user=self.conf["USER"],
                                 dbname="postgres", autocommit=True) as conn:
                conn.execute(sql)
        else:
            import pymysql

            conn = pymysql.connect(host=self.conf["HOST"], port=int(self.conf["PORT"]), user=self.conf["USER"])
            try:
                conn.cursor().execute(sql)
            finally:
                conn.close()


class Project:
    """The moved project: its folder, its environment, and its commands on either side."""

    def __init__(self, tmp: Path, db: Database, name: str) -> None:
        self.dir = tmp / "project"
        shutil.copytree(PROJECT, self.dir)
        self.marks = tmp / "marks"
        self.marks.mkdir()
        url = urlparse(settings.REDIS_URL)
        self.redis = {"host": url.hostname, "port": url.port or 6379, "db": int(url.path.strip("/") or 0)}
        self.name = name
        self.env = {
            **os.environ,
            "PYTHONPATH": str(self.dir),
            "DQ_LEGACY_SECRET": SECRET,
            "DQ_LEGACY_DB": json.dumps(db.conf),
            "DQ_LEGACY_NAME": name,
            "DQ_LEGACY_REDIS": json.dumps(self.redis),
            "DQ_LEGACY_MARKS": str(self.marks),
        }

    def run(self, python: Path | str, *args: str, settings_module: str = "new_settings", **env: str) -> str:
        done = subprocess.run(  # noqa: PLW1510 -- the exit status is asserted below, with the output
            [str(python), *args], cwd=self.dir, capture_output=True, text=True, timeout=180,
            env={**self.env, "DJANGO_SETTINGS_MODULE": settings_module, **env},
        )
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def ours(self, *args: str, **env: str) -> str:
        return self.run(sys.executable, "-m", "django", *args, **env)

    def probe(self, what: str = "rows") -> dict:
        return json.loads(self.run(sys.executable, "new_probe.py", what))

    def cluster_until(self, marks: set[str], **env: str) -> str:
        """Run our qcluster until every one of `marks` was left by a task, then stop it; its log."""
        log = self.dir / f"qcluster-{len(list(self.dir.glob('qcluster-*')))}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "django", "qcluster"], cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
                env={**self.env, "DJANGO_SETTINGS_MODULE": "new_settings", **env},
            )
            try:
                deadline = time.monotonic() + WAIT
                while time.monotonic() < deadline and not marks <= self.ran() and proc.poll() is None:
                    time.sleep(0.2)
                time.sleep(1.0)  # the last results are saved just after their task returned
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        text = log.read_text()
        assert marks <= self.ran(), f"ran {sorted(self.ran())}, not all of {sorted(marks)}; qcluster log:\n{text}"
        return text

    def ran(self) -> set[str]:
        return {p.name for p in self.marks.iterdir()}


@pytest.fixture(scope="session", params=sorted(OLD))
def old(request) -> Path:
    """The old package's Python (the virtualenv is made once per machine and kept)."""
    try:
        return old_python(request.param)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{request.param} does not install on Python {sys.version.split()[0]}: {exc.stderr or exc}")


@pytest.fixture
def moved(old, tmp_path) -> Iterator[tuple[Project, dict]]:
    """The old project's database as the old package left it, and what it made (ids, rows)."""
    import redis

    db = Database(tmp_path, "old")
    name = f"lg{uuid.uuid4().hex[:10]}"
    project = Project(tmp_path, db, name)
    client = redis.Redis(**project.redis)
    try:
        made = json.loads(project.run(old, "old_populate.py", settings_module="old_settings"))
        yield project, made
    finally:
        for key in (*client.keys(f"django_q:{name}:*"), *client.keys(f"django_q:{{{name}}}:*")):
            client.delete(key)
        client.close()
        db.drop()


@pytest.mark.timeout(600)  # the first run on a machine installs the old package
def test_migrate_keeps_every_row_and_runs_what_was_queued(moved, tmp_path):
    project, made = moved
    old_rows = made["rows"]

    project.ours("migrate", "-v", "0")
    after = project.probe()
    # Every task, with its result, times, group and attempts; a repeated name gets the id's end.
    assert after["tasks"].keys() == old_rows["tasks"].keys()
    for task_id, row in old_rows["tasks"].items():
        expected = dict(row)
        if task_id == made["done"]["named_again"]:
            expected["name"] = f"nightly-{task_id[-6:]}"
        assert after["tasks"][task_id] == expected
    assert after["tasks"][made["done"]["failure"]]["success"] is False
    assert after["tasks"][made["done"]["failure"]]["attempt_count"] == 2
    assert after["tasks"][made["done"]["success"]]["result"] == 5
    # Every schedule, with its next run, repeats, cron and cluster; args in our notation.
    assert after["schedules"].keys() == old_rows["schedules"].keys()
    for schedule_id, row in old_rows["schedules"].items():
        expected = dict(row)
        expected["args"] = {"('minutes',)": "'minutes'", "('cron',)": "'cron'", "('once',)": "'once'",
                            "(20,)": "20"}[row["args"]]
        assert after["schedules"][schedule_id] == expected
    # The queued database rows are ours now; the forged one is a dead letter.
    assert after["queued"] == 2
    assert len(after["dead_letters"]) == 1 and "signature" in after["dead_letters"][0]
    # Only our migrations are recorded: none of theirs can stand for a later one of ours.
    assert after["migrations"] == sorted(p.stem for p in (Path(django_q.__file__).parent / "migrations").glob("0*.py"))

    # The schema is exactly what our migrations make on a new database.
    fresh = Database(tmp_path, "fresh")
    try:
        # A database of ours from before 0005 goes on too, its rows untouched.
        new_project = Project(tmp_path / "fresh", fresh, "fresh")
        new_project.ours("migrate", "django_q", "0004", "-v", "0")
        # In SQL: today's Schedule model has columns that 0004 lacks (overlap, from 0007).
        new_project.ours("shell", "-c", "from django.db import connection; connection.cursor().execute("
                         "\"INSERT INTO django_q_schedule (func, args, schedule_type, repeats, next_run) "
                         "VALUES ('math.floor', '1.5', 'O', -1, CURRENT_TIMESTAMP)\")")
        new_project.ours("migrate", "-v", "0")
        assert [s["args"] for s in new_project.probe()["schedules"].values()] == ["1.5"]
        assert project.probe("schema") == new_project.probe("schema")
    finally:
        fresh.drop()
    project.ours("makemigrations", "--check", "--dry-run", "django_q")

    info = project.ours("qinfo")
    assert "schedules:     4" in info and "dead letters:  1" in info

    # The old queued tasks run (a chain goes on), and the due schedules.
    project.cluster_until({"orm-queued", "orm-chain-1", "orm-chain-2", "minutes", "cron", "once"})
    log = project.cluster_until({"redis-queued"}, DQ_LEGACY_BROKER="redis")
    assert "took 1 django-q package(s) from Redis" in log and "1 dead-lettered" in log
    assert "forged" not in project.ran()

    ran = project.probe()
    for key in ("orm", "orm_chain", "redis"):
        task = ran["tasks"][made["queued"][key]]
        assert task["success"] is True and task["result"] == {"orm": "orm-queued", "orm_chain": "orm-chain-1",
                                                               "redis": "redis-queued"}[key]
    assert any(t["result"] == "orm-chain-2" for t in ran["tasks"].values())
    schedules = ran["schedules"]
    for key, label in (("minutes", "minutes"), ("cron", "cron"), ("once", "once")):
        row = schedules[str(made["schedules"][key])]
        assert ran["tasks"][row["task"]]["result"] == label and ran["tasks"][row["task"]]["success"] is True
    assert ran["tasks"][schedules[str(made["schedules"]["once"])]["task"]]["group"] == "once-group"
    assert schedules[str(made["schedules"]["minutes"])]["repeats"] == 2
    assert schedules[str(made["schedules"]["once"])]["next_run"] is None
    assert schedules[str(made["schedules"]["cron"])]["next_run"] > old_rows["schedules"][
        str(made["schedules"]["cron"])]["next_run"]
    assert len(ran["dead_letters"]) == 2


@pytest.mark.parametrize("old", ["django-q2==1.11.1"], indirect=True)
def test_a_migrate_that_stopped_part_way_goes_on(moved):
    """MariaDB commits each DDL statement: a migrate stopped after a table's rows were copied aside keeps them."""
    project, made = moved
    q = '"' if "mysql" not in json.loads(project.env["DQ_LEGACY_DB"])["ENGINE"] else "`"
    project.run(
        sys.executable, "new_probe.py", "sql",
        f"CREATE TABLE {q}django_q_task_djq_legacy{q} AS SELECT * FROM {q}django_q_task{q}",
        f"DELETE FROM {q}django_q_task{q}",
        f"CREATE TABLE {q}django_q_ormq_djq_legacy{q} AS SELECT * FROM {q}django_q_ormq{q}",
        f"DROP TABLE {q}django_q_ormq{q}",
    )
    project.ours("migrate", "-v", "0")
    after = project.probe()
    assert after["tasks"].keys() == made["rows"]["tasks"].keys()
    assert after["schedules"].keys() == made["rows"]["schedules"].keys()
    assert after["queued"] == 2 and len(after["dead_letters"]) == 1
