"""What the moved project's database holds, as JSON: `rows` (tasks, schedules, dead letters) or `schema`; or `sql`."""

import json
import sys

import django

django.setup()

import dump  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.migrations.recorder import MigrationRecorder  # noqa: E402

from django_q.models import DeadLetter, OrmQ  # noqa: E402


def schema():
    """Every django_q table's columns and constraints, as introspection reports them."""
    out = {}
    with connection.cursor() as cursor:
        for table in sorted(t for t in connection.introspection.table_names(cursor) if t.startswith("django_q_")):
            columns = [(c.name, c.type_code if isinstance(c.type_code, (str, int)) else repr(c.type_code),
                        c.internal_size, c.null_ok) for c in connection.introspection.get_table_description(cursor,
                                                                                                           table)]
            constraints = {
                name: {k: v for k, v in sorted(c.items()) if k != "definition"}
                for name, c in connection.introspection.get_constraints(cursor, table).items()
            }
            out[table] = {"columns": sorted(columns), "constraints": constraints}
    return out


if sys.argv[1] == "schema":
    result = schema()
elif sys.argv[1] == "sql":  # statements to run, one an argument
    with connection.cursor() as cursor:
        for statement in sys.argv[2:]:
            cursor.execute(statement)
    result = "ok"
else:
    result = dump.rows()
    result["dead_letters"] = sorted(d.reason for d in DeadLetter.objects.all())
    result["queued"] = OrmQ.objects.count()
    result["migrations"] = sorted(name for app, name in MigrationRecorder(connection).applied_migrations()
                                  if app == "django_q")
print(json.dumps(result, default=str))
