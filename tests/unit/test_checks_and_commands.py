"""A bad Q_CLUSTER is reported by `manage.py check` and stops `qcluster` with one clear line."""

from io import StringIO

import django
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError

from django_q.apps import check_settings
from django_q.management.commands.qcluster import Command as QclusterCommand

# Django 6.1 runs the model checks of `check`, and of the checks before every
# command, against each DATABASES alias, and the test settings' pg and mysql
# aliases need servers. `databases=[]` keeps `check` off the databases; the
# Q_CLUSTER check needs none.
NO_DB = {"databases": []}
checks_need_db_servers = pytest.mark.skipif(
    django.VERSION >= (6, 1),
    reason="Django 6.1 system checks before a command connect to every DATABASES alias (pg, mysql)",
)


def check(**options) -> None:
    call_command("check", **NO_DB, **options)


def qcluster_from_argv(*argv: str) -> tuple[int, str]:
    """Run qcluster as manage.py does; return its exit code and stderr."""
    err = StringIO()
    with pytest.raises(SystemExit) as info:
        QclusterCommand(stdout=StringIO(), stderr=err).run_from_argv(["manage.py", "qcluster", *argv])
    return info.value.code, err.getvalue()


class TestSystemChecks:
    def test_a_good_configuration_passes(self, q_cluster):
        q_cluster(workers=2)
        assert check_settings() == []
        out = StringIO()
        check(stdout=out, stderr=StringIO())
        assert "no issues" in out.getvalue()

    def test_a_bad_setting_is_error_e001_naming_the_key(self, q_cluster):
        q_cluster(workers=0)
        with pytest.raises(SystemCheckError) as info:
            check(stdout=StringIO(), stderr=StringIO())
        assert "(django_q.E001) Q_CLUSTER['workers'] must be a positive integer, got 0" in str(info.value)

    def test_an_unknown_key_is_error_e001(self, q_cluster):
        q_cluster(wrokers=2)
        [message] = check_settings()
        assert message.id == "django_q.E001" and message.is_serious()
        assert "Q_CLUSTER['wrokers']" in message.msg

    def test_an_ignored_django_q2_key_is_warning_w001(self, q_cluster):
        q_cluster(workers=2, guard_cycle=1)
        err = StringIO()
        check(stdout=StringIO(), stderr=err)  # a warning does not fail the check
        assert "(django_q.W001) Q_CLUSTER['guard_cycle'] is ignored: django-q2 used it" in err.getvalue()

    def test_each_ignored_key_gets_its_own_warning(self, q_cluster):
        q_cluster(bulk=10, orm_poll=1)
        messages = check_settings()
        assert [(m.id, m.msg.split("]")[0]) for m in messages] == [
            ("django_q.W001", "Q_CLUSTER['bulk'"),
            ("django_q.W001", "Q_CLUSTER['orm_poll'"),
        ]


BAD_CONFIGS = [
    ({"workers": "four"}, "Q_CLUSTER['workers']"),
    ({"wrokers": 4}, "Q_CLUSTER['wrokers']"),
    ({"serializer": "yaml"}, "Q_CLUSTER['serializer']"),
]


class TestQcluster:
    @pytest.mark.parametrize(("config", "named"), BAD_CONFIGS)
    def test_a_bad_setting_is_one_line_command_error(self, settings, config, named):
        settings.Q_CLUSTER = config
        with pytest.raises(CommandError) as info:
            call_command("qcluster")
        message = str(info.value)
        assert named in message
        assert "\n" not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__

    def test_an_unreachable_broker_is_one_line_command_error(self, unreachable_redis):
        with pytest.raises(CommandError) as info:
            call_command("qcluster")
        assert str(info.value).startswith("cannot reach the redis broker: ")
        assert "\n" not in str(info.value)

    def test_manage_py_prints_an_unreachable_broker_without_a_traceback(self, unreachable_redis):
        code, err = qcluster_from_argv()
        assert code == 1
        assert err.startswith("CommandError: cannot reach the redis broker")
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    def test_manage_py_prints_a_bad_key_in_one_line_without_checks(self, q_cluster):
        q_cluster(workers=0)
        code, err = qcluster_from_argv()
        assert code == 1
        assert err.strip() == "CommandError: Q_CLUSTER['workers'] must be a positive integer, got 0"

    @checks_need_db_servers
    def test_manage_py_names_a_bad_key_without_a_traceback(self, q_cluster):
        q_cluster(workers=0)
        code, err = qcluster_from_argv()
        assert code == 1
        assert "Q_CLUSTER['workers'] must be a positive integer, got 0" in err
        assert "Traceback" not in err

    @checks_need_db_servers
    def test_manage_py_reports_a_bad_key_in_one_line(self, q_cluster):
        q_cluster(workers=0)
        _, err = qcluster_from_argv()
        assert len(err.strip().splitlines()) == 1, err

    def test_a_bad_name_option_is_refused_like_a_bad_name_setting(self, unreachable_redis):
        # With an unreachable broker no cluster can start, should the name pass.
        with pytest.raises(CommandError, match="bad:name"):
            call_command("qcluster", name="bad:name")
