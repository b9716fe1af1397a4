"""The dashboard in a real browser: headless Chromium loads it logged in, waits for its script to draw the
charts from the data endpoint, and takes a screenshot in the light and in the dark colour scheme.

The screenshots go where test_admin_browser.py keeps its own (DQ_SCREENSHOTS, default
/tmp/django_q_screenshots/<DQ_TEST_ID>): dashboard_light.png and dashboard_dark.png.
"""

from __future__ import annotations

import math
import os
import re
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from django_q.brokers import get_broker
from django_q.conf import get_config
from django_q.history import HistoryWriter
from django_q.models import DeadLetter, Schedule
from django_q.names import Identity
from django_q.outcomes import Outcome
from django_q.package import TaskPackage
from django_q.status import ClusterStatus, Counters, WorkerStatus

from .test_admin_browser import CHROMIUM, WINDOW, admin_server, chromium, png_size, screenshots  # noqa: F401

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]
TALL = (WINDOW[0], 1500)  # the whole page: charts, then the tables
WAIT = "--virtual-time-budget=8000"  # ms of page time Chromium lets pass (the fetch, the drawing) before it looks


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def an_hour_of_history(broker, now: float) -> None:
    """Sixty minutes of a made-up but plausible load, written as a saver writes it."""
    clock = Clock()
    writer = HistoryWriter(broker, "browser-test", clock)
    for back in range(59, -1, -1):
        clock.now = now - back * 60
        load = int(20 + 15 * math.sin(back / 7))
        done = [Outcome("d", TaskPackage(id="t", name="n", func=f"shop.tasks.{func}", enqueued=clock.now - wait),
                        ok, None, clock.now, clock.now + run, 1, broker.name)
                for func, ok, run, wait, count in (("charge", True, 0.04, 0.01, load), ("charge", False, 0.2, 0.3, 1),
                                                   ("report", True, 2.2, 0.8, 2), ("sync_stock", True, 0.4, 0.05, 5))
                for _ in range(count)]
        writer.add(done)
        writer.minutes[int(clock.now // 60)].depth = int(6 + 5 * math.cos(back / 5))
        writer.flush(force=True)


def a_running_cluster(broker, now: float) -> str:
    identity = Identity.new(broker.name)
    progress = {"done": 120, "total": 500, "note": "row 88"}
    workers = (WorkerStatus(0, 4101, "t1", "charge-card-alpha", now - 3.5, progress, 81_200, 37.5, 311),
               WorkerStatus(1, 4102, None, None, None, None, 79_800, 0.0, 298))
    status = ClusterStatus(identity.id, "web-1", 4100, broker.name, "running", workers, 3, 600, 20, now - 3600,
                           now, Counters(), rate=1.4)
    broker.publish_status(identity.id, status.to_json(), 600)
    return identity.id


def test_dashboard_draws_its_charts_in_chromium(admin_server, tmp_path, screenshots):  # noqa: F811
    User.objects.create_superuser("browser", password="pw")
    config = get_config()
    broker = get_broker(config.name, config)
    now = time.time()
    an_hour_of_history(broker, now)
    cluster_id = a_running_cluster(broker, now)
    DeadLetter.objects.create(broker_id="7", queue=config.name, payload=b"x", reason="bad signature: not signed")
    Schedule.objects.create(func="shop.tasks.report", name="hourly report",
                            next_run=timezone.now() + timedelta(minutes=20))
    url = f"{admin_server.url}/test-login/browser/?next=/admin/django_q/dashboard/"
    try:
        dom = chromium(tmp_path, WAIT, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "Log in" not in dom.stdout and "Server Error" not in dom.stdout
        assert re.search(r'data-drawn="\d+"', dom.stdout), "the script never drew the data"
        assert dom.stdout.count('class="line s0"') == 3  # a line in each of the three charts
        assert "shop.tasks.charge" in dom.stdout and "charge-card-alpha" in dom.stdout
        assert "120/500 (24%) row 88" in dom.stdout and "hourly report" in dom.stdout
        dark = ("--force-dark-mode", "--blink-settings=preferredColorScheme=0")
        for scheme, flags in (("light", ()), ("dark", dark)):
            shot = screenshots / f"dashboard_{scheme}.png"
            shot.unlink(missing_ok=True)
            done = chromium(tmp_path, WAIT, *flags, f"--window-size={TALL[0]},{TALL[1]}", f"--screenshot={shot}", url)
            assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
            assert png_size(shot) == TALL
            assert shot.stat().st_size > 20_000
    finally:
        broker.remove_status(cluster_id)
        broker.purge()
