"""Without its extra, each optional package's feature says which pip line installs it, and the rest runs.

A missing package is simulated with `sys.modules[name] = None` (which makes any
import of it fail): in this process for what is looked up at call time, in a
fresh interpreter for what a module imports when it is imported. The release
check (.ci/release_check.sh) runs the demo on a wheel installed without extras.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command

from django_q import extras
from django_q.exceptions import MissingExtra
from django_q.conf import build_config
from django_q.models import Schedule
from django_q.schedules import CRON, Recurrence

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = sorted(extras.PACKAGES)


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def run_without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where `modules` cannot be imported, after django.setup()."""
    script = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    script += "import django\ndjango.setup()\n" + textwrap.dedent(code)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_error_names_the_package_and_the_pip_line():
    assert str(extras.missing("prometheus_client", "The metrics")) == (
        "The metrics needs the prometheus-client package: pip install 'django-q-cluster[metrics]'")
    assert isinstance(extras.missing("redis", "x"), ImproperlyConfigured)
    assert extras.installed("redis") and not extras.installed("no_such_module_here")


@pytest.mark.parametrize("key", ["redis", "django_redis"])
def test_a_redis_broker_without_redis_names_the_redis_extra(settings, monkeypatch, key):
    settings.Q_CLUSTER = {"redis": "redis://127.0.0.1:6379/14"} if key == "redis" else {"django_redis": "default"}
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    without(monkeypatch, "redis")
    with pytest.raises(MissingExtra) as caught:
        build_config()
    assert str(caught.value) == (
        f"Q_CLUSTER['{key}'] needs the redis package: pip install 'django-q-cluster[redis]'")


def test_max_rss_without_psutil_names_the_monitor_extra(settings, monkeypatch):
    settings.Q_CLUSTER = {"max_rss": 200_000}
    without(monkeypatch, "psutil")
    with pytest.raises(MissingExtra, match=r"pip install 'django-q-cluster\[monitor\]'"):
        build_config()
    settings.Q_CLUSTER = {}
    assert build_config().max_rss is None  # without max_rss psutil is not needed


@pytest.mark.django_db
def test_a_cron_schedule_without_croniter_names_the_cron_extra(monkeypatch):
    without(monkeypatch, "croniter")
    schedule = Schedule(func="math.floor", args="1", schedule_type=Schedule.CRON, cron="0 3 * * *")
    with pytest.raises(ValidationError) as caught:
        schedule.full_clean()
    assert caught.value.message_dict["cron"] == [
        "A cron schedule needs the croniter package: pip install 'django-q-cluster[cron]'"]
    with pytest.raises(MissingExtra, match=r"pip install 'django-q-cluster\[cron\]'"):  # as it runs
        Recurrence(CRON, datetime(2026, 1, 1, tzinfo=UTC), UTC, cron="0 3 * * *")
    Schedule(func="math.floor", args="1", schedule_type=Schedule.HOURLY).full_clean()  # other types need nothing


@pytest.mark.django_db
def test_qmonitor_without_rich_prints_plain_tables(q_cluster, monkeypatch):
    q_cluster(name="extras")
    without(monkeypatch, "rich")
    out = io.StringIO()
    call_command("qmonitor", "--run-once", stdout=out)
    assert "queue extras · orm broker" in out.getvalue()


def test_metrics_without_prometheus_client_names_the_metrics_extra():
    done = run_without(["prometheus_client"], "import django_q.urls")
    assert done.returncode != 0
    assert ("django_q.urls (the Prometheus metrics) needs the prometheus-client package: "
            "pip install 'django-q-cluster[metrics]'") in done.stderr


def test_without_any_extra_the_database_broker_side_imports_and_runs():
    """Every module but the Redis broker's and the metrics' imports; a task runs in sync mode; no process title."""
    done = run_without(OPTIONAL, """
        import importlib, pkgutil
        import django_q
        needs_extra = {"django_q.brokers.redis", "django_q.brokers.redis_calls", "django_q.brokers.redis_client",
                       "django_q.brokers.redis_owners",
                       "django_q.metrics", "django_q.urls"}
        needs_django6 = {"django_q.tasks_backend", "django_q.djtasks"}
        for info in pkgutil.walk_packages(django_q.__path__, "django_q."):
            if info.name in needs_extra or (info.name in needs_django6 and django.VERSION < (6,)):
                continue
            importlib.import_module(info.name)
        from django_q.cluster.process import setproctitle
        setproctitle("unchanged")
        from django_q.status import MEASURED
        print("imported", MEASURED)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported False"
