"""The documentation's examples (docs/examples/) run, and its generated tables match the code."""

import json
import re
import sys
from pathlib import Path

import django
import pytest
from django.test import override_settings
from django.urls import resolve
from django.utils import timezone

from django_q import conf
from django_q.brokers import close_brokers
from django_q.conf import build_config
from django_q.models import Schedule, Task
from django_q.tasks import async_task, result

# Collected by pytest from this module: the how-to guide's test case, run as written.
from docs.examples.test_enqueueing_code import PlaceOrderTests  # noqa: F401

DOCS = Path(__file__).resolve().parents[2] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import djq_meanings  # noqa: E402  (docs/_ext is no package; its modules need no Sphinx)


@pytest.fixture
def myapp(monkeypatch):
    """The tutorial's `myapp.tasks` is docs/examples/tutorial_tasks.py."""
    from docs.examples import tutorial_tasks

    monkeypatch.setitem(sys.modules, "myapp", type(sys)("myapp"))
    monkeypatch.setitem(sys.modules, "myapp.tasks", tutorial_tasks)
    return tutorial_tasks


@pytest.mark.django_db
def test_the_tutorial_runs_in_sync_mode(myapp, caplog):
    from docs.examples import tutorial_use

    with override_settings(Q_CLUSTER={"sync": True}):
        assert tutorial_use.first_task() == 5
        hooked = tutorial_use.with_a_hook()
        assert result(hooked) == 5
        assert any(f"task {Task.objects.get(id=hooked).name} returned 5" in r.getMessage() for r in caplog.records)
        assert sorted(tutorial_use.a_group()) == [0, 2, 4, 6]
    row = tutorial_use.a_schedule()
    assert (row.func, row.schedule_type, row.cron) == ("myapp.tasks.nightly_report", Schedule.CRON, "0 3 * * *")
    assert row.next_run <= timezone.now()  # the first run is due at once, as the tutorial says


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:Django 2028 will not have a default mailer")  # Django 6.1's MAILERS
def test_the_idempotent_task_sends_one_mail_when_run_twice(mailoutbox):
    from django.contrib.auth import get_user_model

    from docs.examples.idempotent import activate_account

    user = get_user_model().objects.create(username="ada", email="ada@example.com", is_active=False)
    with override_settings(Q_CLUSTER={"sync": True}):
        first = async_task("docs.examples.idempotent.activate_account", user.pk)
        second = async_task("docs.examples.idempotent.activate_account", user.pk)
    assert (result(first), result(second)) == (True, False)
    assert [m.to for m in mailoutbox] == [["ada@example.com"]]
    assert activate_account(user.pk) is False


@pytest.mark.django_db
def test_the_unique_key_example_sends_one_task(queue_name):
    from docs.examples.idempotent import send_invoice

    with override_settings(Q_CLUSTER={"name": queue_name}):
        try:
            first = send_invoice(7)
            assert send_invoice(7) == first
            assert send_invoice(8) != first
        finally:
            from django_q.brokers import get_broker

            get_broker().purge()
            close_brokers()


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")  # an alias "queue" for DATABASE_ALIAS
@pytest.mark.parametrize("name", ["DATABASE", "DATABASE_ALIAS", "REDIS", "REDIS_SENTINEL", "SENTRY", "METRICS"])
def test_every_q_cluster_of_the_guides_is_valid(name, settings):
    from docs.examples import settings_q_cluster

    settings.DATABASES = {**settings.DATABASES, "queue": settings.DATABASES["default"]}
    with override_settings(Q_CLUSTER=getattr(settings_q_cluster, name)):
        config = build_config()
    expected = getattr(settings_q_cluster, name)
    assert config.name == expected["name"]
    assert config.broker_kind == ("redis" if "redis" in expected else "orm")


def test_the_queues_guide_settings_serve_their_queues_in_order():
    from docs.examples import queues

    with override_settings(Q_CLUSTER=queues.Q_CLUSTER):
        assert build_config().served_queues == ("high", "default", "low")
    with override_settings(Q_CLUSTER=queues.WITH_ALT_CLUSTERS):
        fast = build_config(cluster="fast")
        assert (fast.name, fast.served_queues, fast.workers) == ("fast", ("urgent", "fast"), 8)
        assert build_config(queues=["default", "low"]).served_queues == ("default", "low")  # qcluster -q


def test_the_rate_limits_guide_settings_are_valid():
    from docs.examples import rate_limits

    with override_settings(Q_CLUSTER=rate_limits.Q_CLUSTER):
        limits = build_config().rate_limits
    assert set(limits) == set(rate_limits.Q_CLUSTER["rate_limits"])


def test_the_sentinel_example_makes_a_sentinel_client():
    from redis.sentinel import SentinelConnectionPool

    from django_q.brokers.redis_client import make_client
    from docs.examples.settings_q_cluster import REDIS_SENTINEL

    client = make_client(REDIS_SENTINEL["redis"])  # connects lazily: no sentinel is asked here
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    assert client.connection_pool.service_name == "mymaster"
    assert client.connection_pool.connection_kwargs["password"] == "secret"


def test_the_metrics_url_example_routes_to_the_metrics_view(settings):
    from django_q.metrics import metrics

    settings.ROOT_URLCONF = "docs.examples.urls_metrics"
    assert resolve("/metrics/").func is metrics


def test_the_settings_table_has_a_meaning_for_every_key_and_no_other():
    assert set(djq_meanings.MEANINGS) == set(conf._RULES)
    assert set(djq_meanings.DEFAULTS) <= set(conf._RULES)


def metric_names() -> set[str]:
    """Every series name the metrics view can yield, from django_q/metrics.py."""
    from django_q import metrics

    source = Path(metrics.__file__).read_text()
    names = {f"django_q_tasks_{key}_total" for key, _ in metrics.COUNTERS}
    for kind, name in re.findall(r'(Counter|Gauge|Histogram)MetricFamily\(\s*"(django_q_[a-z_]+)"', source):
        if kind == "Counter":
            names.add(f"{name}_total")
        elif kind == "Histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


def test_the_grafana_dashboard_queries_only_real_metrics():
    dashboard = json.loads((DOCS / "grafana" / "django_q.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for expr in queries for name in re.findall(r"\bdjango_q_[a-z_]+", expr)}
    assert len(queries) >= 8 and used
    assert used <= metric_names(), used - metric_names()


def test_the_metrics_reference_lists_every_metric():
    import djq_sources

    listed = {row[0].strip("`") for row in djq_sources.metric_rows()}
    real = {n for n in metric_names() if not n.endswith(("_bucket", "_sum", "_count"))}
    real |= {n[: -len("_bucket")] for n in metric_names() if n.endswith("_bucket")}
    assert listed == real


def test_the_deploy_examples_give_a_cluster_more_time_to_stop_than_its_tasks_timeout():
    from docs.examples.settings_q_cluster import DATABASE

    deploy = DOCS / "examples" / "deploy"
    graces = {
        "systemd": re.search(r"^TimeoutStopSec=(\d+)$", (deploy / "qcluster.service").read_text(), re.M),
        "supervisor": re.search(r"^stopwaitsecs=(\d+)$", (deploy / "supervisor.conf").read_text(), re.M),
        "compose": re.search(r"stop_grace_period: (\d+)s", (deploy / "compose.yaml").read_text()),
        "kubernetes": re.search(r"terminationGracePeriodSeconds: (\d+)", (deploy / "kubernetes.yaml").read_text()),
    }
    assert all(graces.values()), graces
    assert {name: int(m.group(1)) > DATABASE["timeout"] for name, m in graces.items()} == dict.fromkeys(graces, True)
    assert DATABASE["retry"] > DATABASE["timeout"]
    for name in ("qcluster.service", "supervisor.conf", "Dockerfile", "compose.yaml", "kubernetes.yaml"):
        assert "manage.py" in (deploy / name).read_text() and "qcluster" in (deploy / name).read_text()


@pytest.mark.django_db
def test_the_readme_quick_start_runs(myapp, caplog):
    readme = (DOCS.parent / "README.md").read_text()
    block = re.search(r"## Quick start.*?```python\n(.*?)```", readme, re.S).group(1)
    scope: dict = {}
    with override_settings(Q_CLUSTER={"sync": True}):
        exec(compile(block, "README.md", "exec"), scope)  # noqa: S102  (the README's own example)
    assert result(scope["task_id"]) == -2.0
    assert any("returned (0.5, 2.0)" in r.getMessage() for r in caplog.records)


# --- every ```python block of the pages runs ------------------------------------------------

_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, dedented (a block may sit in a list item)."""
    import textwrap

    return [textwrap.dedent(body) for _, body in _BLOCK.findall(page.read_text())]


PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and python_blocks(p))


@pytest.fixture
def page_modules(monkeypatch, myapp):
    """What the pages' examples name: `myapp.tasks` (the tutorial's, with the schedules page's functions),
    `reports` (the task API page's `reports.build` and `reports.rebuild`) and `hooks`, the module the
    blocks of a page run in, so that a hook one block defines is importable by the next
    ("hooks.print_result")."""
    for name in ("report", "sync", "digest"):
        monkeypatch.setattr(myapp, name, lambda *args, **kwargs: None, raising=False)
        getattr(myapp, name).__module__, getattr(myapp, name).__qualname__ = "myapp.tasks", name
    reports = type(sys)("reports")
    reports.build = reports.rebuild = lambda year: year
    monkeypatch.setitem(sys.modules, "reports", reports)
    hooks = type(sys)("hooks")
    monkeypatch.setitem(sys.modules, "hooks", hooks)
    return hooks


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_every_python_block_of_a_page_runs_in_sync_mode(page, page_modules, capsys):
    """Doctest-style: the blocks of a page run one after another, in sync mode, with the names they assume
    but do not define (the schedules page's `tomorrow_at_9`, the progress example's `load` and `save`)."""
    from datetime import timedelta

    if "django.tasks" in page.read_text() and django.VERSION < (6, 0):
        pytest.skip("the page's examples use django.tasks, which exists from Django 6")
    scope = page_modules.__dict__
    scope.update(tomorrow_at_9=timezone.now() + timedelta(days=1), load=lambda path: [], save=lambda row: None)
    with override_settings(Q_CLUSTER={"sync": True}):
        for n, block in enumerate(python_blocks(page)):
            exec(compile(block, f"{page.name}, block {n}", "exec"), scope)  # noqa: S102
    if "Q_CLUSTER" in scope:  # a settings block: the settings are valid
        with override_settings(Q_CLUSTER=scope["Q_CLUSTER"]):
            build_config()


def test_the_prometheus_rules_and_queries_in_the_pages_use_real_metrics():
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / "howto" / "prometheus.md").read_text(), re.S)
    used = {name for block in blocks for name in re.findall(r"(?<![/\w])django_q_[a-z_]+", block)}  # not a file path
    assert len(used) >= 4
    assert used <= metric_names(), used - metric_names()


@pytest.mark.django_db
def test_sync_mode_runs_an_on_commit_task_at_once_inside_the_transaction_as_the_testing_guide_says():
    from django.db import transaction

    with override_settings(Q_CLUSTER={"sync": True}), transaction.atomic():
        task_id = async_task("math.floor", 1.5, on_commit=True)
        assert result(task_id) == 1  # before the commit


@pytest.mark.django_db
@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks exists from Django 6")
def test_the_django_tasks_backend_runs_in_sync_mode_as_the_migration_guide_says():
    from docs.examples.django_tasks import word_count

    with override_settings(Q_CLUSTER={"sync": True}):
        task_id = word_count.enqueue("never lose a task").id
    assert word_count.get_result(task_id).return_value == 4
