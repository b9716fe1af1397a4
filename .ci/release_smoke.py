"""The release check's run of django-q-cluster installed WITHOUT extras (Django alone), on the demo project.

    cd <copy of example/> && DEMO_DB=/tmp/x.sqlite3 python release_smoke.py

What a database-broker user does: manage.py check and migrate, a cluster
(manage.py qcluster) on the ORM broker, async_task and result, a schedule
that is not cron, and the admin pages. Exits 0 only if all of it worked and
the cluster stopped cleanly on SIGTERM. The demo itself (run_demo.py) draws
its output with rich, which comes with an extra, so it runs after [all].
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

os.environ["DJANGO_SETTINGS_MODULE"] = "demo_site.settings"
WAIT = 60.0  # seconds for the task and the schedule's task


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], check=True, timeout=120)


def main() -> None:
    manage("check", "--fail-level", "WARNING")
    manage("migrate", "-v", "0")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from django_q.models import Schedule, Success
    from django_q.tasks import async_task, result

    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], start_new_session=True)
    try:
        task_id = async_task("math.copysign", 2, -1)
        got = result(task_id, wait=int(WAIT * 1000))
        if got != -2.0:
            sys.exit(f"async_task('math.copysign', 2, -1): result {got!r}, not -2.0")
        print(f"task {task_id}: result {got}")
        schedule = Schedule.objects.create(func="math.hypot", args="3, 4", schedule_type=Schedule.ONCE,
                                           repeats=1, next_run=timezone.now() - timedelta(seconds=1))
        deadline = time.monotonic() + WAIT
        while not Success.objects.filter(func="math.hypot").exists():
            if time.monotonic() > deadline:
                sys.exit(f"schedule {schedule.pk} did not run within {WAIT:.0f} s")
            time.sleep(0.25)
        print(f"schedule {schedule.pk}: ran, result {Success.objects.get(func='math.hypot').result}")
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            code = cluster.wait(WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(10)
            sys.exit("the cluster did not stop within a minute of SIGTERM")
    if code != 0:
        sys.exit(f"the cluster exited with code {code}")
    setup_test_environment()  # the test client's host, 'testserver', allowed
    client = Client()
    client.force_login(User.objects.create_superuser("smoke", "smoke@example.com", "smoke-password"))
    for page in ("", "django_q/success/", "django_q/schedule/", "django_q/schedule/add/"):
        status = client.get(f"/admin/{page}").status_code
        if status != 200:
            sys.exit(f"/admin/{page}: HTTP {status}")
    print("admin pages: 200; cluster stopped, exit code 0")


if __name__ == "__main__":
    main()
