"""A django-q2 project's Q_CLUSTER, every key at once: `manage.py check` warns, `qcluster` runs, and every
failure shows in the cluster's log, at the error reporter plugin and as the task_failed signal."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.unit.test_q2_settings import DJANGO_Q2_111, q2_project_settings

from .test_qcluster import Project, stop

pytestmark = pytest.mark.slow

REPORTER_DIST = str(Path(__file__).resolve().parents[1] / "reporter_dist")


def django_q2_project(project: Project, tmp_path: Path, **overrides) -> dict:
    """Give the project every key django-q2 1.11 reads (its broker stays the fixture's) and the test plugin."""
    conf = q2_project_settings() | {
        "cluster_name": project.env["DQ_ACCEPT_QUEUE"],  # django-q2's queue name: the test's own queue
        "workers": 2,
        "ack_failures": True,  # a failure is recorded at once (False: delivered again up to max_attempts)
        "max_attempts": 1,
        "log_level": "WARNING",
        "error_reporter": {
            "filelog": {"path": str(tmp_path / "reports"), "env": "acceptance"},
            "sentry": {"dsn": "https://key@sentry.example/1"},  # django-q-sentry is not installed here
        },
        **overrides,
    }
    conf.pop("redis", None)
    project.env["DQ_ACCEPT_Q_CLUSTER_JSON"] = json.dumps(conf)
    project.env["DQ_ACCEPT_FAILED_LOG"] = str(tmp_path / "failed")
    project.env["PYTHONPATH"] = os.pathsep.join([project.env["PYTHONPATH"], REPORTER_DIST])
    return conf


def test_the_settings_cover_every_django_q2_key(project, tmp_path):
    conf = django_q2_project(project, tmp_path)
    broker_keys = {"redis", "django_redis", "orm", "sqs", "iron_mq", "mongo", "broker_class"}
    assert set(DJANGO_Q2_111) - broker_keys <= set(conf)


def test_check_warns_about_each_unneeded_key_and_the_missing_plugin(project, tmp_path):
    django_q2_project(project, tmp_path)
    done = project.run("-m", "django", "check")
    assert done.returncode == 0, done.stderr
    for key in ("bulk", "cpu_affinity", "daemonize_workers", "guard_cycle", "save_limit_per",
                "scheduler", "testing", "time_zone", "mongo_db"):
        assert f"(django_q.W001) Q_CLUSTER['{key}'] is ignored: " in done.stderr, key
    assert "(django_q.W002) Q_CLUSTER['error_reporter']['sentry']" in done.stderr
    assert "E00" not in done.stderr
    for key in ("log_level", "label", "cluster_name", "ALT_CLUSTERS", "error_reporter']['filelog", "'cache'",
                "'cached'"):
        assert key not in done.stderr, key


def test_a_dropped_broker_stops_check_and_qcluster(project, tmp_path):
    django_q2_project(project, tmp_path, sqs={"aws_region": "us-east-1"})
    done = project.run("-m", "django", "check")
    assert done.returncode != 0 and "(django_q.E002) Q_CLUSTER['sqs']: the Amazon SQS broker is not supported" in (
        done.stderr
    )
    done = project.run("-m", "django", "qcluster", timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "Q_CLUSTER['sqs']" in lines[0], done.stderr


def wait_for_lines(path: Path, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.2)
    pytest.fail(f"{count} lines not in {path} within {timeout}s: {lines}")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_every_failure_is_logged_reported_and_signalled(project, tmp_path, method):
    django_q2_project(project, tmp_path, cached=False)  # results in the database, where the test reads them
    raised = project.drive("enqueue-with", "tests.app.tasks.fail", "bad", '["kaput"]', "{}")
    missing = project.drive("enqueue-with", "tests.app.tasks.no_such_task", "bad", "[]", "{}")
    slow = project.drive("enqueue-with", "tests.app.tasks.sleep", "bad", "[60]", '{"timeout": 1}')
    project.drive("enqueue-with", "tests.app.tasks.add", "good", "[1, 2]", "{}")
    cluster = project.qcluster("--start-method", method)
    try:
        wait_for_lines(tmp_path / "failed", 3)
        project.wait_for("good", 1)
        # The task that kills its worker comes once the others are recorded. A worker that dies takes
        # with it the outcomes it finished but had not sent yet (up to FLUSH_AFTER); those tasks are
        # delivered again, and with max_attempts 1 recorded as failed without running (guarantees.md).
        lost = project.drive("enqueue-with", "tests.app.tasks.die", "bad", "[]", "{}")
        failed = wait_for_lines(tmp_path / "failed", 4)
        reports = [json.loads(line) for line in wait_for_lines(tmp_path / "reports", 4)]
    finally:
        out = stop(cluster, signal.SIGTERM)
    assert cluster.returncode == 0, out
    assert project.drive("results", "good") == [3]  # and the cluster runs what succeeds

    assert sorted(failed) == sorted(f"{task_id} False" for task_id in (raised, missing, slow, lost))

    kinds = sorted((r["type"], r["options"]["env"]) for r in reports)
    assert kinds == [("ImportError", "acceptance"), ("ValueError", "acceptance"),
                     ("WorkerLost", "acceptance"), ("WorkerLost", "acceptance")], reports
    assert any(slow in r["message"] and "timeout" in r["message"] for r in reports)
    assert any(lost in r["message"] and "worker lost after 1 attempts" in r["message"] for r in reports)

    errors = [line for line in out.splitlines() if " ERROR " in line]

    def logged(task_id: str, func: str, what: str) -> bool:
        return any(f"({task_id}) {func} failed on attempt 1: {what}" in line for line in errors)

    assert logged(raised, "tests.app.tasks.fail", "ValueError: kaput"), out
    assert logged(missing, "tests.app.tasks.no_such_task", "ImportError: cannot import 'tests.app.tasks.no_such_task'")
    assert logged(slow, "tests.app.tasks.sleep", "WorkerLost: task exceeded its timeout"), out
    assert logged(lost, "tests.app.tasks.die", "WorkerLost: worker lost after 1 attempts"), out
    assert any(f"({slow}) tests.app.tasks.sleep passed its timeout; killing its worker" in line for line in errors)
    # log_level WARNING holds in every process: no INFO line from any of them, the warnings still come
    assert " INFO " not in out, out
    assert "W002" not in out and "Q_CLUSTER['error_reporter']['sentry']: no installed package" in out


def test_q_cluster_name_and_qcluster_n_pick_the_alt_clusters_entry(project, tmp_path):
    django_q2_project(project, tmp_path)  # ALT_CLUSTERS = {"long": {"timeout": 3600, "retry": 4000}}
    done = project.run("-m", "django", "qinfo", "--config")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["timeout"] == 60.0
    project.env["Q_CLUSTER_NAME"] = "long"
    done = project.run("-m", "django", "qinfo", "--config")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert (config["name"], config["timeout"], config["retry"]) == ("long", 3600.0, 4000.0)
    del project.env["Q_CLUSTER_NAME"]
    done = project.run("-m", "django", "qinfo", "--config", "-n", "long")
    assert (json.loads(done.stdout)["name"], json.loads(done.stdout)["timeout"]) == ("long", 3600.0)
