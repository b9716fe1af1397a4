"""Who may schedule what through the admin: real users and permissions, forged POSTs, and full_clean()."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError

from django_q.brokers import get_broker
from django_q.guard import DENIED_MODULES, denied, listed
from django_q.models import Schedule

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/django_q/schedule/add/"
CHANGELIST = "/admin/django_q/schedule/"
# Functions of every denied module, and ways round their names.
DENIED = ["os.system", "builtins.eval", "builtins.exec", "subprocess.run", "shutil.rmtree", "pty.spawn",
          "importlib.import_module", "code.interact", "pickle.loads", "marshal.loads", "ctypes.CDLL", "sys.exit",
          "posix.system", "logging.os.system", "logging.sys.exit", "os.path.join"]


def user(name: str, *perms: str, superuser: bool = False) -> User:
    account = User.objects.create_user(name, password="pw", is_staff=True, is_superuser=superuser)
    account.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q", codename__in=perms))
    return account


def form(func: str, **fields: str) -> dict[str, str]:
    data = {"name": "probe", "func": func, "hook": "", "args": "", "kwargs": "", "schedule_type": "O",
            "minutes": "", "repeats": "-1", "next_run_0": "2031-01-06", "next_run_1": "12:00:00", "cron": "",
            "cluster": ""}
    data.update(fields)
    return data


def post(client, func: str, **fields: str):
    return client.post(ADD_URL, form(func, **fields))


def refused(response, field: str = "func") -> str:
    """The form error of `field` on a page that was sent back unsaved."""
    assert response.status_code == 200, response.status_code
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    return " ".join(errors[field])


@pytest.fixture
def adder(client):
    """A staff user who may only add schedules."""
    client.force_login(user("adder", "add_schedule"))
    return client


@pytest.fixture
def superuser(client):
    client.force_login(user("root", superuser=True))
    return client


def test_every_module_of_the_deny_list_is_in_the_table():
    assert {path.split(".")[0] for path in DENIED} >= DENIED_MODULES


class TestAddOnlyStaff:
    def test_cannot_schedule_os_system(self, adder, q_cluster):
        q_cluster(admin_funcs=["tests.app."])
        assert "nobody may schedule" in refused(post(adder, "os.system", args="'touch /tmp/owned'"))
        assert not Schedule.objects.exists()

    def test_cannot_schedule_an_importable_function_nobody_allowed(self, adder, q_cluster):
        q_cluster()
        assert "admin_funcs" in refused(post(adder, "tests.app.tasks.add", args="1, 2"))
        assert not Schedule.objects.exists()

    def test_a_function_not_allowed_is_not_even_imported(self, adder, q_cluster):
        q_cluster(admin_funcs=["tests.app.tasks.add"])
        import sys

        sys.modules.pop("this", None)
        refused(post(adder, "this.s"))  # importing `this` prints the Zen of Python
        assert "this" not in sys.modules

    @pytest.mark.parametrize("entry", ["tests.app.tasks.add", "tests.app.tasks.", "tests."])
    def test_may_schedule_what_admin_funcs_lists(self, adder, q_cluster, entry):
        q_cluster(admin_funcs=[entry])
        response = post(adder, "tests.app.tasks.add", args="1, 2")
        assert response.status_code == 302, response.context and response.context["adminform"].form.errors
        assert Schedule.objects.get().func == "tests.app.tasks.add"

    def test_a_prefix_allows_only_what_it_starts(self, adder, q_cluster):
        q_cluster(admin_funcs=["tests.app.tasks."])
        refused(post(adder, "tests.app.tasks_other.f"))
        refused(post(adder, "tests.app.preloaded.mark"))

    def test_may_schedule_a_function_an_existing_schedule_names(self, adder, q_cluster):
        q_cluster()
        Schedule.objects.create(name="existing", func="math.copysign", args="2, -2")
        response = post(adder, "math.copysign", args="1, -1", name="mine")
        assert response.status_code == 302
        assert Schedule.objects.filter(name="mine", func="math.copysign").exists()

    def test_the_hook_follows_the_same_rules(self, adder, q_cluster):
        q_cluster(admin_funcs=["tests.app.tasks.add"])
        assert "admin_funcs" in refused(post(adder, "tests.app.tasks.add", hook="math.copysign"), "hook")
        assert "nobody may schedule" in refused(post(adder, "tests.app.tasks.add", hook="builtins.print"), "hook")

    def test_admin_funcs_cannot_open_the_deny_list(self, q_cluster):
        from django_q.conf import get_config
        from django_q.exceptions import ConfigurationError

        for entries in (["os.system"], ["builtins."], ["tests.app.tasks.add", "subprocess.run"]):
            q_cluster(admin_funcs=entries)
            with pytest.raises(ConfigurationError, match=r"Q_CLUSTER\['admin_funcs'\] names what nobody may schedule"):
                get_config()

    def test_an_existing_row_with_os_system_does_not_allow_it(self, adder, q_cluster):
        q_cluster()
        Schedule.objects.bulk_create([Schedule(name="planted", func="os.system", args="'true'")])
        assert "nobody may schedule" in refused(post(adder, "os.system"))

    def test_cannot_change_a_schedule_by_a_forged_post(self, adder, q_cluster):
        q_cluster(admin_funcs=["tests.app.tasks.add"])
        row = Schedule.objects.create(name="ok", func="tests.app.tasks.add", args="1, 2")
        response = adder.post(f"{CHANGELIST}{row.pk}/change/", form("os.system"))
        assert response.status_code == 403
        row.refresh_from_db()
        assert row.func == "tests.app.tasks.add"

    def test_cannot_run_now_by_a_forged_action(self, adder, q_cluster):
        q_cluster(admin_funcs=["tests.app.tasks.add"])
        row = Schedule.objects.create(name="ok", func="tests.app.tasks.add", args="1, 2")
        response = adder.post(CHANGELIST, {"action": "run_now", "_selected_action": [row.pk]})
        assert response.status_code == 403
        assert get_broker().size() == 0


class TestSuperuser:
    def test_may_schedule_any_importable_function(self, superuser, q_cluster):
        q_cluster()
        assert post(superuser, "math.copysign", args="2, -2").status_code == 302
        assert Schedule.objects.get().func == "math.copysign"

    @pytest.mark.parametrize("func", DENIED)
    def test_cannot_schedule_the_deny_list(self, superuser, q_cluster, func):
        q_cluster()
        assert "nobody may schedule" in refused(post(superuser, func))
        assert not Schedule.objects.exists()

    def test_a_forged_hook_outside_the_offered_ones_is_checked(self, superuser, q_cluster):
        q_cluster(admin_funcs=["tests.app.tasks.add"])
        assert "nobody may schedule" in refused(post(superuser, "tests.app.tasks.add", hook="builtins.exec"), "hook")

    def test_cannot_turn_a_schedule_into_os_system(self, superuser, q_cluster):
        q_cluster()
        row = Schedule.objects.create(name="ok", func="math.copysign", args="2, -2")
        response = superuser.post(f"{CHANGELIST}{row.pk}/change/", form("os.system", name="ok"))
        assert "nobody may schedule" in refused(response)
        row.refresh_from_db()
        assert row.func == "math.copysign"

    def test_run_now_refuses_a_row_of_the_deny_list(self, superuser, q_cluster):
        q_cluster()
        row = Schedule.objects.create(name="ok", func="math.copysign")
        Schedule.objects.filter(pk=row.pk).update(func="os.system", args="'touch /tmp/owned'")
        response = superuser.post(CHANGELIST, {"action": "run_now", "_selected_action": [row.pk]}, follow=True)
        assert "cannot run" in response.content.decode()
        assert get_broker().size() == 0


def test_the_form_offers_the_allowed_functions(adder, q_cluster):
    q_cluster(admin_funcs=["math.copysign", "tests.app.tasks."])
    Schedule.objects.create(name="existing", func="math.fsum")
    Schedule.objects.bulk_create([Schedule(name="planted", func="os.system")])
    page = adder.get(ADD_URL).content.decode()
    assert 'list="id_func_options"' in page and '<datalist id="id_func_options">' in page
    for offered in ("math.copysign", "math.fsum", "tests.app.tasks.add", "tests.app.tasks.fail"):
        assert f'<option value="{offered}">' in page
    assert "os.system" not in page


class TestFullClean:
    def test_nobody_may_name_the_deny_list(self):
        for func in DENIED:
            with pytest.raises(ValidationError, match="nobody may schedule"):
                Schedule(func=func).full_clean()
        with pytest.raises(ValidationError, match="nobody may schedule"):
            Schedule(func="math.copysign", hook="builtins.print").full_clean()

    def test_without_an_editor_any_other_importable_function(self, q_cluster):
        q_cluster()
        Schedule(func="math.copysign", args="2, -2").full_clean()

    def test_with_a_staff_editor_the_admin_rules_hold(self, q_cluster):
        q_cluster(admin_funcs=["math.copysign"])
        staff, root = user("staff", "add_schedule"), user("root", superuser=True)
        allowed, other, by_root = Schedule(func="math.copysign"), Schedule(func="math.fsum"), Schedule(func="math.fsum")
        allowed.editor = other.editor = staff
        by_root.editor = root
        allowed.full_clean()
        with pytest.raises(ValidationError, match="admin_funcs"):
            other.full_clean()
        by_root.full_clean()

    def test_the_schedule_api_refuses_the_deny_list(self):
        from django_q.tasks import schedule

        with pytest.raises(ValidationError, match="nobody may schedule"):
            schedule("os.system", "true")
        assert not Schedule.objects.exists()


@pytest.mark.parametrize("path", DENIED)
def test_denied_names_every_way_to_a_denied_module(path):
    assert denied(path)


@pytest.mark.parametrize("path", ["math.copysign", "tests.app.tasks.add", "django_q.tasks.async_task", "no.such.f"])
def test_denied_lets_other_functions_through(path):
    assert denied(path) is None


def test_listed_takes_paths_and_prefixes():
    assert listed("a.b.c", ["a.b.c"]) and listed("a.b.c", ["a.b."]) and listed("a.b.c", ["a."])
    assert not listed("a.b.cd", ["a.b.c"]) and not listed("a.bc.d", ["a.b."])


def test_resubmit_refuses_a_failed_task_of_the_deny_list(superuser):
    from django.utils import timezone

    from django_q.models import Failure
    from django_q.names import new_id

    now = timezone.now()
    task = Failure.objects.create(id=new_id(), name="planted", func="os.system", args=("touch /tmp/owned",),
                                  kwargs={}, result="x", started=now, stopped=now, success=False)
    response = superuser.post("/admin/django_q/failure/", {"action": "resubmit", "_selected_action": [task.pk]},
                              follow=True)
    assert "cannot be resubmitted" in response.content.decode()
    assert get_broker().size() == 0 and Failure.objects.filter(pk=task.pk).exists()
