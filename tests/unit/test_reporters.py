"""Error reporters: real plugins of the `djangoq.errorreporters` entry-point group (tests/reporter_dist,
installed by the `plugin_installed` fixture)."""

import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_q import reporters
from django_q.apps import check_settings
from django_q.conf import get_config
from django_q.models import Task
from django_q.tasks import async_task

from .helpers import reports


def test_a_configured_reporter_is_made_with_its_options_and_gets_the_failure(q_cluster, plugin_installed, tmp_path):
    q_cluster(error_reporter={"filelog": {"path": str(tmp_path / "r"), "env": "prod"}})
    reporters.report(get_config(), ZeroDivisionError("division by zero"))
    [line] = reports(tmp_path / "r")
    assert (line["type"], line["message"], line["options"]) == ("ZeroDivisionError", "division by zero", {"env": "prod"})


def test_reporters_are_made_once_per_process(q_cluster, plugin_installed, tmp_path):
    q_cluster(error_reporter={"filelog": {"path": str(tmp_path / "r")}})
    assert reporters.load(get_config()) is reporters.load(get_config())


def test_without_error_reporter_nothing_is_loaded(q_cluster, plugin_installed):
    q_cluster()
    reporters.report(get_config(), ValueError("x"))
    assert reporters._made is None


def test_a_failing_reporter_is_logged_and_the_others_still_report(q_cluster, plugin_installed, tmp_path, caplog):
    q_cluster(error_reporter={"broken": {}, "filelog": {"path": str(tmp_path / "r")}})
    with caplog.at_level(logging.ERROR, logger="django_q"):
        reporters.report(get_config(), KeyError("k"))
    assert [line["type"] for line in reports(tmp_path / "r")] == ["KeyError"]
    assert any("error reporter BrokenReporter failed" in r.getMessage() for r in caplog.records)


def test_a_reporter_no_package_registers_is_check_warning_w002(q_cluster, plugin_installed):
    q_cluster(error_reporter={"sentry": {"dsn": "https://key@sentry.example/1"}})
    [message] = check_settings()
    assert message.id == "django_q.W002" and not message.is_serious()
    assert "Q_CLUSTER['error_reporter']['sentry']" in message.msg and "djangoq.errorreporters" in message.msg


def test_an_installed_reporter_gives_no_warning(q_cluster, plugin_installed, tmp_path):
    q_cluster(error_reporter={"filelog": {"path": str(tmp_path / "r")}})
    assert check_settings() == []


def test_a_reporter_that_refuses_its_options_stops_qcluster_with_one_line(q_cluster, plugin_installed):
    q_cluster(error_reporter={"picky": {"dsn": "nonsense"}})
    with pytest.raises(CommandError) as info:
        call_command("qcluster", stdout=StringIO(), stderr=StringIO())
    message = str(info.value)
    assert "Q_CLUSTER['error_reporter']['picky']" in message and "ValueError: bad options ['dsn']" in message
    assert "\n" not in message


@pytest.mark.django_db(transaction=True)
def test_a_task_that_raises_in_sync_mode_is_reported(q_cluster, plugin_installed, tmp_path):
    q_cluster(sync=True, error_reporter={"filelog": {"path": str(tmp_path / "r")}})
    task_id = async_task("tests.app.tasks.fail", "kaput")
    assert Task.objects.get(id=task_id).success is False
    [line] = reports(tmp_path / "r")
    assert (line["type"], line["message"]) == ("ValueError", "kaput")


@pytest.mark.django_db(transaction=True)
def test_a_task_that_cannot_be_imported_is_reported(q_cluster, plugin_installed, tmp_path):
    q_cluster(sync=True, error_reporter={"filelog": {"path": str(tmp_path / "r")}})
    async_task("tests.app.tasks.no_such_function")
    [line] = reports(tmp_path / "r")
    assert "no_such_function" in line["message"]
