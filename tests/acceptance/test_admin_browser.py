"""The admin pages in a real browser: headless Chromium loads them from a live server and takes a screenshot.

The screenshots are kept in DQ_SCREENSHOTS (default
/tmp/django_q_screenshots/<DQ_TEST_ID>) for a person to look at; the test checks that Chromium rendered the admin page
itself, not the login form or an error.
"""

from __future__ import annotations

import os
import struct
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test import override_settings
from django.test.testcases import LiveServerThread
from django.utils import timezone

from django_q.models import Task
from django_q.names import new_id

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1400, 900)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args],
        capture_output=True, text=True, timeout=90,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def stored(success: bool, name: str, **fields) -> Task:
    """A finished task's row, its status as the cluster saves it (the field's default says succeeded)."""
    now = timezone.now()
    return Task.objects.create(
        id=new_id(), name=name, started=now - timedelta(seconds=2.25), stopped=now, success=success,
        status=Task.SUCCESS if success else Task.FAILURE, attempt_count=fields.pop("attempt_count", 1),
        cluster="default", **fields,
    )


@pytest.fixture
def screenshots() -> Path:
    # One folder per run: two interpreters testing at once must not overwrite each other's files.
    folder = Path(os.environ.get("DQ_SCREENSHOTS", f"/tmp/django_q_screenshots/{settings.RUN_ID}"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def admin_server(transactional_db):
    """A server in a thread that also serves the admin's CSS (the test settings have no STATIC_URL)."""
    with override_settings(STATIC_URL="/static/"):
        thread = LiveServerThread("127.0.0.1", StaticFilesHandler)
        thread.daemon = True
        thread.start()
        thread.is_ready.wait(30)
        if thread.error:
            raise thread.error
        thread.url = f"http://127.0.0.1:{thread.port}"
        yield thread
        thread.terminate()
        thread.join(10)


def test_failed_task_page_in_chromium(admin_server, tmp_path, screenshots):
    User.objects.create_superuser("browser", password="pw")
    for i in range(3):
        stored(True, f"fine-task-{i}", func="math.copysign", args=(i, -1), kwargs={}, result=-float(i), group="sums")
    traceback = ('Traceback (most recent call last):\n  File "/srv/app/tasks.py", line 12, in charge\n'
                 '    raise ValueError(f"card {card!r} declined")\nValueError: card <4242> declined\n')
    task = stored(False, "charge-card-declined", func="shop.tasks.charge", args=(42, "4242"),
                  kwargs={"amount": 9.5, "currency": "EUR"}, result=traceback, group="payments", attempt_count=3,
                  exception="builtins.ValueError")

    pages = {
        "failure": f"/admin/django_q/failure/{task.id}/change/",
        "successes": "/admin/django_q/success/",
    }
    for name, page in pages.items():
        url = f"{admin_server.url}/test-login/browser/?next={page}"
        dom = chromium(tmp_path, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "Log in" not in dom.stdout and "Server Error" not in dom.stdout
        if name == "failure":
            assert "charge-card-declined" in dom.stdout
            assert "ValueError: card &lt;4242&gt; declined" in dom.stdout
            assert "2.250 s" in dom.stdout
            assert '<div class="readonly">Failed</div>' in dom.stdout and "Succeeded" not in dom.stdout
        else:
            assert all(f"fine-task-{i}" in dom.stdout for i in range(3))
        shot = screenshots / f"admin_{name}.png"
        shot.unlink(missing_ok=True)
        done = chromium(tmp_path, f"--screenshot={shot}", url)
        assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
        assert png_size(shot) == WINDOW
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
