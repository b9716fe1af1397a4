"""Every task and schedule row as JSON-able values; the same code reads the old and the new tables."""

from django_q.models import Schedule, Task

TASK_FIELDS = ("id", "name", "func", "hook", "args", "kwargs", "result", "group", "started", "stopped", "success",
               "attempt_count")
SCHEDULE_FIELDS = ("id", "name", "func", "hook", "args", "kwargs", "schedule_type", "minutes", "repeats", "next_run",
                   "cron", "task", "cluster")


def _value(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def rows():
    return {
        "tasks": {t.id: {f: _value(getattr(t, f)) for f in TASK_FIELDS} for t in Task.objects.all()},
        "schedules": {str(s.id): {f: _value(getattr(s, f)) for f in SCHEDULE_FIELDS} for s in Schedule.objects.all()},
    }
