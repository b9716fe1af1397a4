"""Taking over a database that django-q 1.3 or django-q2 1.11 made (run by migrations 0002 and 0005).

They name their app `django_q` and their first migration `0001_initial`, as we
do: on their database Django takes our 0001 as applied and would run 0002 on
their tables. So 0002 first looks for their schema (their OrmQ has a `lock`
column; ours never had one) and, if it finds it, rebuilds each table as our
0001 makes it and copies every row across: tasks (their pickles are base64
text, ours are bytes; a repeated name gets the id's end, as the recorder
does), schedules (same ids; args in our
notation). Their queued rows wait in LEGACY_QUEUE, a table
of their own, until 0005 re-signs each in our package format (it needs our
OrmQ as 0004 leaves it) and drops it. Their migrations' records go,
so that none can stand for a later migration of ours. 0002-0004 then run as on any database
of ours, so the schema ends exactly as ours. On a database of ours both steps
find nothing to do.

PostgreSQL and SQLite run a migration in one transaction. MariaDB commits
each DDL statement, so every step can run again after a crash part-way: a
table's rows are first copied aside (`<table>_djq_legacy`, no constraints, so
no index or sequence name clashes with the new table), and as long as that
copy exists the table is rebuilt from it.
"""

from __future__ import annotations

import ast
import base64
import logging
import pickle
import time
import zlib
from typing import Any

from django.core.management.color import no_style
from django.db import models
from django.db.migrations.recorder import MigrationRecorder

logger = logging.getLogger("django_q")

LEGACY_QUEUE = "django_q_ormq_djq_legacy"
BATCH = 500
# django-q's and django-q2's migrations after their 0001_initial (django-q2 1.11 has them all; django-q 1.3 up to 0014).
THEIR_MIGRATIONS = (
    "0002_auto_20150630_1624", "0003_auto_20150708_1326", "0004_auto_20150710_1043", "0005_auto_20150718_1506",
    "0006_auto_20150805_1817", "0007_ormq", "0008_auto_20160224_1026", "0009_auto_20171009_0915",
    "0010_auto_20200610_0856", "0011_auto_20200628_1055", "0012_auto_20200702_1608", "0013_task_attempt_count",
    "0014_schedule_cluster", "0015_alter_schedule_schedule_type", "0016_schedule_intended_date_kwarg",
    "0017_task_cluster_alter", "0018_task_success_index",
    "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more",
)
PICKLES = ("args", "kwargs", "result")


def adopt_tables(apps: Any, schema_editor: Any) -> None:
    """Rebuild django-q's task, schedule and queue tables as our 0001 makes them, keeping their rows."""
    conn = schema_editor.connection
    tables = _tables(conn)
    ormq_theirs = "django_q_ormq" in tables and "lock" in _columns(conn, "django_q_ormq")
    held = [t for t in ("django_q_schedule", "django_q_task") if _hold(t) in tables]
    ormq_half_done = LEGACY_QUEUE in tables and "django_q_ormq" not in tables
    if not (ormq_theirs or held or ormq_half_done):
        return
    logger.warning("django_q: taking over the tables of django-q / django-q2 on database %r", conn.alias)
    _rebuild(schema_editor, apps.get_model("django_q", "Schedule"), _schedule_row)
    _rebuild(schema_editor, apps.get_model("django_q", "Task"), _task_rows())
    if ormq_theirs or ormq_half_done:
        if LEGACY_QUEUE not in tables:
            _execute(conn, f"CREATE TABLE {_q(conn, LEGACY_QUEUE)} AS SELECT * FROM {_q(conn, 'django_q_ormq')}")
        if "django_q_ormq" in _tables(conn):
            _execute(conn, f"DROP TABLE {_q(conn, 'django_q_ormq')}")
        schema_editor.create_model(apps.get_model("django_q", "OrmQ"))
    if "django_q_deadletter" not in _tables(conn):
        schema_editor.create_model(apps.get_model("django_q", "DeadLetter"))
    # Their migrations' records would mark as applied any later migration of ours that took one of their names.
    MigrationRecorder(conn).migration_qs.filter(app="django_q", name__in=THEIR_MIGRATIONS).delete()


def _rebuild(schema_editor: Any, model: type[models.Model], convert: Any) -> None:
    """Copy `model`'s table aside (unless a crashed run did), make it anew, copy the rows back, drop the copy."""
    conn = schema_editor.connection
    table, hold = model._meta.db_table, _hold(model._meta.db_table)
    tables = _tables(conn)
    if hold not in tables:
        if table not in tables:
            schema_editor.create_model(model)
            return
        _execute(conn, f"CREATE TABLE {_q(conn, hold)} AS SELECT * FROM {_q(conn, table)}")
    if table in _tables(conn):
        _execute(conn, f"DROP TABLE {_q(conn, table)}")
    schema_editor.create_model(model)
    have = _columns(conn, hold)
    columns = [f.column for f in model._meta.concrete_fields if f.column and (f.column in have or f.column in FALLBACK)]
    read = [c for c in columns if c in have]
    insert = (
        f"INSERT INTO {_q(conn, table)} ({', '.join(_q(conn, c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    with conn.cursor() as src, conn.cursor() as dst:
        # Oldest first: of tasks with one name, the first to finish keeps it (as in the recorder).
        order = ", ".join(_q(conn, c) for c in ("stopped", "id") if c in have)
        src.execute(f"SELECT {', '.join(_q(conn, c) for c in read)} FROM {_q(conn, hold)} ORDER BY {order}")
        while rows := src.fetchmany(BATCH):
            found = [dict(zip(read, row)) for row in rows]
            dst.executemany(insert, [[row.get(c, FALLBACK.get(c)) for c in columns] for row in convert(found)])
        for sql in conn.ops.sequence_reset_sql(no_style(), [model]):
            dst.execute(sql)
    if "intended_date_kwarg" in have:
        _warn_intended_date(conn, hold)
    _execute(conn, f"DROP TABLE {_q(conn, hold)}")


# Columns a django-q version may lack that ours must fill (django-q before 1.3 had no attempt_count).
FALLBACK = {"attempt_count": 0}


def _schedule_row(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["args"] = _args_text(row.get("args"))
    return rows


def _args_text(text: str | None) -> str | None:
    """Their schedule args as ours: django-q spreads a tuple literal ("(1, 'a')", what its schedule() stores)
    into the call, where ours reads the text as the call's argument list ("1, 'a'")."""
    try:
        value = ast.literal_eval(text) if text else None
    except (SyntaxError, ValueError):
        return text  # the scheduler names what it cannot read, as for any schedule
    if isinstance(value, tuple):
        return ", ".join(repr(arg) for arg in value) or None
    return text


def _task_rows() -> Any:
    """A converter for task rows: pickles as bytes, names made unique (over every batch)."""
    names: set[str] = set()

    def convert(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            for column in PICKLES:
                row[column] = _pickle_bytes(row.get(column))
            name = row.get("name") or row["id"]
            if name in names:
                name = f"{name[:90]}-{row['id'][-6:]}"
            names.add(name)
            row["name"] = name
        return rows

    return convert


def _pickle_bytes(value: Any) -> bytes | None:
    """A pickle as our PickledObjectField stores it, from django-picklefield's base64 text (or ours, as it is)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)  # already ours: a run that crashed after copying it
    data = base64.b64decode(value.encode())
    if data[:1] != b"\x80":  # picklefield's compress=True zlib-compresses the pickle before base64
        try:
            data = zlib.decompress(data)
        except zlib.error:
            pass
    return data


def _warn_intended_date(conn: Any, hold: str) -> None:
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT {_q(conn, 'id')} FROM {_q(conn, hold)} WHERE {_q(conn, 'intended_date_kwarg')} IS NOT NULL "
            f"AND {_q(conn, 'intended_date_kwarg')} <> ''"
        )
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        logger.warning(
            "django_q: schedules %s set django-q2's intended_date_kwarg, which Django Q does not pass: "
            "their tasks now run without that keyword argument", ", ".join(map(str, ids))
        )


def requeue_legacy(apps: Any, schema_editor: Any) -> None:
    """Re-sign the packages django-q left in its queue table as ours; dead-letter those whose signature fails."""
    from django.utils import timezone

    from django_q.exceptions import PackageError
    from django_q.legacy import legacy_names, loads, package_of
    from django_q.package import pack

    conn = schema_editor.connection
    if LEGACY_QUEUE not in _tables(conn):
        return
    OrmQ = apps.get_model("django_q", "OrmQ")
    DeadLetter = apps.get_model("django_q", "DeadLetter")
    names = legacy_names()
    taken = dead = 0
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT {_q(conn, 'id')}, {_q(conn, 'key')}, {_q(conn, 'payload')} FROM {_q(conn, LEGACY_QUEUE)} "
            f"ORDER BY {_q(conn, 'id')}"
        )
        rows = cursor.fetchall()
    for row_id, key, payload in rows:
        # A package sent to another cluster was signed with the sender's name, not the receiver's.
        try:
            package = package_of(loads(payload, (*names, key)))
            data = pack(package)
        except (PackageError, pickle.PicklingError, TypeError, AttributeError) as exc:  # pickle's errors: by pack()
            DeadLetter.objects.using(conn.alias).create(
                broker_id=f"django-q {row_id}", queue=key, payload=str(payload).encode(), reason=str(exc)
            )
            dead += 1
        else:
            OrmQ.objects.using(conn.alias).create(
                queue=key, payload=data, visible=time.time(), key=package.id, created=timezone.now()
            )
            taken += 1
        # One at a time, so that a run that stopped part-way (MariaDB) goes on where it was.
        _execute(conn, f"DELETE FROM {_q(conn, LEGACY_QUEUE)} WHERE {_q(conn, 'id')} = {int(row_id)}")
    _execute(conn, f"DROP TABLE {_q(conn, LEGACY_QUEUE)}")
    if rows:
        logger.warning(
            "django_q: %d queued django-q task(s) requeued, %d dead-lettered (see their reasons)", taken, dead
        )


def _tables(conn: Any) -> set[str]:
    with conn.cursor() as cursor:
        return set(conn.introspection.table_names(cursor))


def _columns(conn: Any, table: str) -> set[str]:
    with conn.cursor() as cursor:
        return {col.name for col in conn.introspection.get_table_description(cursor, table)}


def _hold(table: str) -> str:
    return f"{table}_djq_legacy"


def _q(conn: Any, name: str) -> str:
    return conn.ops.quote_name(name)


def _execute(conn: Any, sql: str) -> None:
    with conn.cursor() as cursor:
        cursor.execute(sql)
