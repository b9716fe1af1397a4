"""A cron schedule run end to end by `manage.py qcluster` in a subprocess."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from .test_qcluster import Project, stop

pytestmark = pytest.mark.slow

SETUP = """
import django, json
django.setup()
from datetime import timedelta
from django.utils import timezone
from django_q.models import Schedule
# Half a day away from now in TIME_ZONE, so the next occurrence cannot fall inside the test's watch;
# never 01:00-02:59, which a change to summer time skips.
hour = (timezone.localtime().hour + 12) % 24
hour = 4 if hour in (1, 2) else hour
sched = Schedule(name="daily", func="tests.app.tasks.add", args="2, 3", schedule_type="C", cron=f"0 {hour} * * *",
                 next_run=timezone.now() - timedelta(days=1, minutes=5))
sched.full_clean()
sched.save()
print(json.dumps([sched.pk, hour]))
"""

READ = """
import django, json, sys
django.setup()
from django.conf import settings
from django_q.models import Schedule
sched = Schedule.objects.get(pk=int(sys.argv[1]))
task = sched.last_run()
print(json.dumps({"next_run": sched.next_run.isoformat(), "repeats": sched.repeats, "result": sched.result(),
                  "success": sched.success(), "group": task and task.group, "time_zone": settings.TIME_ZONE}))
"""


def python(project: Project, code: str, *args: str) -> object:
    done = project.run("-c", code, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_due_cron_schedule_runs_and_moves_to_its_next_occurrence(project):
    """The schedule was due yesterday: it runs once now, and its next run is the next hh:00 in TIME_ZONE."""
    pk, hour = python(project, SETUP)
    pk = str(pk)
    cluster = project.qcluster()
    deadline = time.monotonic() + 60
    state = python(project, READ, pk)
    while state["result"] is None and time.monotonic() < deadline and cluster.poll() is None:
        time.sleep(0.2)
        state = python(project, READ, pk)
    time.sleep(2.5)  # the scheduler passes every second: a second run would show by now
    again = python(project, READ, pk)
    out = stop(cluster, signal.SIGTERM)
    assert cluster.returncode == 0, out
    assert (state["result"], state["success"], state["group"], state["repeats"]) == (5, True, "daily", -2), out
    assert again == state
    local = ZoneInfo(state["time_zone"])  # the project's TIME_ZONE, Django's default America/Chicago
    next_run = datetime.fromisoformat(state["next_run"]).astimezone(local)
    now = datetime.now(local)
    assert (next_run.hour, next_run.minute, next_run.second) == (hour, 0, 0)
    assert now < next_run <= now + timedelta(days=1)
