"""When schedules run, with what arguments, and what the model and the admin accept.

The occurrence tables pass times in explicitly (no frozen clock): each row is
a series and the local times of its next occurrences, DST days and month ends
among them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.test import RequestFactory
from django.utils import timezone

from django_q.admin import ScheduleAdmin
from django_q.models import Schedule, Task
from django_q.schedules import GRACE, Recurrence, ScheduleError, parse_args, parse_kwargs, plan
from django_q.tasks import schedule

BERLIN = ZoneInfo("Europe/Berlin")  # DST 2024: Mar 31 02:00 -> 03:00, Oct 27 03:00 -> 02:00
NEW_YORK = ZoneInfo("America/New_York")  # DST 2024: Mar 10 02:00 -> 03:00, Nov 3 02:00 -> 01:00


def at(text: str, tz=UTC, fold: int = 0) -> datetime:
    """An aware time from 'YYYY-MM-DD HH:MM' in `tz`."""
    return datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold)


def local(t: datetime, tz) -> str:
    return t.astimezone(tz).isoformat(sep=" ", timespec="minutes")


# kind, time zone, anchor (local), minutes or cron, the next occurrences (local, with offset)
SERIES = [
    pytest.param("D", BERLIN, "2024-03-29 09:00", None,
                 ["2024-03-30 09:00+01:00", "2024-03-31 09:00+02:00", "2024-04-01 09:00+02:00"], id="daily-spring"),
    pytest.param("D", BERLIN, "2024-10-26 09:00", None,
                 ["2024-10-27 09:00+01:00", "2024-10-28 09:00+01:00"], id="daily-autumn"),
    pytest.param("D", NEW_YORK, "2024-03-09 09:00", None,
                 ["2024-03-10 09:00-04:00", "2024-03-11 09:00-04:00"], id="daily-new-york"),
    pytest.param("D", BERLIN, "2024-03-30 02:30", None,
                 ["2024-03-31 03:30+02:00", "2024-04-01 02:30+02:00"], id="daily-in-the-gap"),
    pytest.param("D", BERLIN, "2024-10-26 02:30", None,
                 ["2024-10-27 02:30+02:00", "2024-10-28 02:30+01:00"], id="daily-in-the-fold"),
    pytest.param("W", BERLIN, "2024-03-25 09:00", None,
                 ["2024-04-01 09:00+02:00", "2024-04-08 09:00+02:00"], id="weekly"),
    pytest.param("BW", NEW_YORK, "2024-10-27 09:00", None,
                 ["2024-11-10 09:00-05:00", "2024-11-24 09:00-05:00"], id="biweekly"),
    pytest.param("M", BERLIN, "2024-01-31 09:00", None,
                 ["2024-02-29 09:00+01:00", "2024-03-31 09:00+02:00", "2024-04-30 09:00+02:00",
                  "2024-05-31 09:00+02:00"], id="monthly-31st-leap"),
    pytest.param("M", UTC, "2023-01-31 09:00", None,
                 ["2023-02-28 09:00+00:00", "2023-03-31 09:00+00:00"], id="monthly-31st"),
    pytest.param("M", UTC, "2024-01-30 23:59", None,
                 ["2024-02-29 23:59+00:00", "2024-03-30 23:59+00:00"], id="monthly-30th"),
    pytest.param("M", UTC, "2024-12-15 12:00", None,
                 ["2025-01-15 12:00+00:00", "2025-02-15 12:00+00:00"], id="monthly-new-year"),
    pytest.param("BM", UTC, "2023-12-31 00:00", None,
                 ["2024-02-29 00:00+00:00", "2024-04-30 00:00+00:00", "2024-06-30 00:00+00:00",
                  "2024-08-31 00:00+00:00"], id="bimonthly"),
    pytest.param("Q", BERLIN, "2023-11-30 08:00", None,
                 ["2024-02-29 08:00+01:00", "2024-05-30 08:00+02:00", "2024-08-30 08:00+02:00",
                  "2024-11-30 08:00+01:00"], id="quarterly"),
    pytest.param("Y", UTC, "2024-02-29 06:00", None,
                 ["2025-02-28 06:00+00:00", "2026-02-28 06:00+00:00", "2027-02-28 06:00+00:00",
                  "2028-02-29 06:00+00:00"], id="yearly-leap-day"),
    pytest.param("H", BERLIN, "2024-03-31 01:15", None,
                 ["2024-03-31 03:15+02:00", "2024-03-31 04:15+02:00"], id="hourly-spring"),
    pytest.param("H", BERLIN, "2024-10-27 01:30", None,
                 ["2024-10-27 02:30+02:00", "2024-10-27 02:30+01:00", "2024-10-27 03:30+01:00"], id="hourly-autumn"),
    pytest.param("I", BERLIN, "2024-03-31 00:45", 90,
                 ["2024-03-31 03:15+02:00", "2024-03-31 04:45+02:00"], id="minutes-spring"),
    pytest.param("I", UTC, "2024-12-31 23:59", 1,
                 ["2025-01-01 00:00+00:00", "2025-01-01 00:01+00:00"], id="minutes"),
    pytest.param("C", BERLIN, "2024-03-30 10:00", "0 9 * * *",
                 ["2024-03-31 09:00+02:00", "2024-04-01 09:00+02:00"], id="cron-spring"),
    pytest.param("C", BERLIN, "2024-03-30 03:00", "30 2 * * *",
                 ["2024-03-31 03:30+02:00", "2024-04-01 02:30+02:00"], id="cron-in-the-gap"),
    pytest.param("C", BERLIN, "2024-10-27 01:00", "30 * * * *",
                 ["2024-10-27 01:30+02:00", "2024-10-27 02:30+02:00", "2024-10-27 03:30+01:00"], id="cron-fold"),
    pytest.param("C", NEW_YORK, "2024-11-02 00:00", "0 1 * * *",
                 ["2024-11-02 01:00-04:00", "2024-11-03 01:00-04:00", "2024-11-04 01:00-05:00"], id="cron-ny-fold"),
    pytest.param("C", NEW_YORK, "2024-03-09 00:00", "0 2 * * *",
                 ["2024-03-09 02:00-05:00", "2024-03-10 03:00-04:00", "2024-03-11 02:00-04:00"], id="cron-ny-gap"),
    pytest.param("C", UTC, "2024-01-15 00:00", "0 0 L * *",
                 ["2024-01-31 00:00+00:00", "2024-02-29 00:00+00:00", "2024-03-31 00:00+00:00"], id="cron-month-end"),
    pytest.param("C", UTC, "2024-01-01 00:07", "*/15 * * * *",
                 ["2024-01-01 00:15+00:00", "2024-01-01 00:30+00:00"], id="cron-quarter-hours"),
]


@pytest.mark.parametrize(("kind", "tz", "anchor", "extra", "expected"), SERIES)
def test_next_occurrences(kind, tz, anchor, extra, expected):
    series = Recurrence(kind, at(anchor, tz), tz, minutes=extra if kind == "I" else None,
                        cron=extra if kind == "C" else None)
    t, seen = at(anchor, tz), []
    for _ in expected:
        t = series.after(t)
        assert t.tzinfo is UTC
        seen.append(local(t, tz))
    assert seen == expected


@pytest.mark.parametrize(("kind", "tz", "anchor", "extra", "expected"), SERIES)
def test_one_step_after_a_long_gap_matches_walking_every_occurrence(kind, tz, anchor, extra, expected):
    """Catching up counts from the anchor in one step; it lands where walking each occurrence would."""
    series = Recurrence(kind, at(anchor, tz), tz, minutes=extra if kind == "I" else None,
                        cron=extra if kind == "C" else None)
    late = at(anchor, tz) + timedelta(days=400 if kind in ("M", "BM", "Q", "Y") else 40, minutes=7)
    t = at(anchor, tz)
    while t <= late:
        t = series.after(t)
    assert series.after(late) == t
    assert series.contains(t) and not series.contains(t - timedelta(seconds=1))


@pytest.mark.parametrize(("kind", "tz", "anchor", "extra", "expected"), SERIES)
def test_every_occurrence_is_on_the_series(kind, tz, anchor, extra, expected):
    series = Recurrence(kind, at(anchor, tz), tz, minutes=extra if kind == "I" else None,
                        cron=extra if kind == "C" else None)
    for text in expected:
        assert series.contains(datetime.fromisoformat(text))


def test_monthly_far_from_the_anchor_keeps_the_anchor_day():
    series = Recurrence("M", at("2024-01-31 09:00", BERLIN), BERLIN)
    assert local(series.after(at("2030-06-15 00:00", BERLIN)), BERLIN) == "2030-06-30 09:00+02:00"
    assert local(series.after(at("2030-07-01 00:00", BERLIN)), BERLIN) == "2030-07-31 09:00+02:00"


@pytest.mark.parametrize(
    ("kind", "minutes", "cron"),
    [("X", None, None), ("O", None, None), ("I", None, None), ("I", 0, None), ("C", None, None),
     ("C", None, "every tuesday"), ("C", None, "61 * * * *")],
)
def test_a_bad_series_is_a_schedule_error(kind, minutes, cron):
    with pytest.raises(ScheduleError):
        Recurrence(kind, at("2024-01-01 00:00"), UTC, minutes=minutes, cron=cron)


def test_a_cron_expression_that_never_matches_is_a_schedule_error():
    with pytest.raises(ScheduleError, match="never matches"):
        Recurrence("C", at("2024-01-01 00:00"), UTC, cron="0 0 30 2 *").after(at("2024-01-01 00:00"))


NOW = at("2024-06-15 12:00:30")


class TestPlan:
    def test_repeats_count_down_and_a_finished_schedule_is_kept_without_next_run(self):
        step = plan("D", at("2024-06-15 12:00"), 2, NOW, UTC)
        assert (step.run, step.repeats, step.next_run, step.delete) == (True, 1, at("2024-06-16 12:00"), False)
        step = plan("D", at("2024-06-16 12:00"), 1, at("2024-06-16 12:00"), UTC, anchor=step.anchor)
        assert (step.run, step.repeats, step.next_run, step.delete) == (True, 0, None, False)

    def test_forever_keeps_counting_down_below_minus_one(self):
        step = plan("H", at("2024-06-15 12:00"), -1, NOW, UTC)
        assert (step.run, step.repeats, step.next_run) == (True, -2, at("2024-06-15 13:00"))

    @pytest.mark.parametrize(("repeats", "deleted"), [(-1, True), (1, False), (5, False)])
    def test_once_runs_once_then_is_deleted_or_kept(self, repeats, deleted):
        step = plan("O", at("2024-06-15 12:00"), repeats, NOW, UTC)
        assert (step.run, step.next_run, step.repeats, step.delete) == (True, None, 0, deleted)

    def test_once_runs_however_late_even_without_catch_up(self):
        assert plan("O", at("2020-01-01 00:00"), 1, NOW, UTC, catch_up=False).run

    def test_catch_up_runs_the_missed_occurrences_once(self):
        step = plan("H", at("2024-06-15 07:00"), -1, NOW, UTC, catch_up=True)
        assert (step.run, step.repeats, step.next_run) == (True, -2, at("2024-06-15 13:00"))

    def test_without_catch_up_missed_occurrences_are_skipped(self):
        step = plan("H", at("2024-06-15 07:00"), 5, at("2024-06-15 12:05"), UTC, catch_up=False)
        assert (step.run, step.repeats, step.next_run) == (False, 5, at("2024-06-15 13:00"))

    def test_without_catch_up_an_occurrence_due_within_the_grace_still_runs(self):
        step = plan("D", NOW - GRACE + timedelta(seconds=1), -1, NOW, UTC, catch_up=False)
        assert step.run
        assert not plan("D", NOW - GRACE - timedelta(seconds=1), -1, NOW, UTC, catch_up=False).run
        # Behind by hours, but the latest occurrence of the series is seconds old: it is due, not missed.
        step = plan("I", at("2024-06-15 08:00"), -1, NOW, UTC, minutes=1, catch_up=False)
        assert (step.run, step.next_run) == (True, at("2024-06-15 12:01"))

    def test_the_anchor_keeps_month_ends_across_runs(self):
        step = plan("M", at("2024-01-31 09:00"), -1, at("2024-01-31 09:00"), UTC)
        assert step.next_run == at("2024-02-29 09:00") and step.anchor == at("2024-01-31 09:00")
        step = plan("M", step.next_run, -1, step.next_run, UTC, anchor=step.anchor)
        assert step.next_run == at("2024-03-31 09:00")

    def test_moving_next_run_off_the_series_starts_a_new_one(self):
        step = plan("M", at("2024-02-10 09:00"), -1, at("2024-02-10 09:00"), UTC, anchor=at("2024-01-31 09:00"))
        assert (step.anchor, step.next_run) == (at("2024-02-10 09:00"), at("2024-03-10 09:00"))

    def test_a_claimed_run_keeps_its_anchor_and_runs_whatever_the_time(self):
        hold = at("2024-02-29 09:00:30")  # next_run as a claim left it, off the series
        step = plan("M", hold, 3, at("2024-02-29 10:00"), UTC, anchor=at("2024-01-31 09:00"), catch_up=False,
                    claimed=True)
        assert (step.run, step.repeats, step.next_run) == (True, 2, at("2024-03-31 09:00"))

    def test_daily_stays_at_nine_local_through_dst(self):
        nine = at("2024-03-30 09:00", BERLIN)
        step = plan("D", nine, -1, nine, BERLIN)
        step = plan("D", step.next_run, -1, step.next_run, BERLIN, anchor=step.anchor)
        assert local(step.next_run, BERLIN) == "2024-04-01 09:00+02:00"


ARGS = [
    ("", ()),
    (None, ()),
    ("2, -2", (2, -2)),
    ("'a', b'x', None, True, 1.5, -3j", ("a", b"x", None, True, 1.5, -3j)),
    ("[1, {'k': (2, 3)}], {4, 5}", ([1, {"k": (2, 3)}], {4, 5})),
    ("(1, 2)", ((1, 2),)),
    ("1,\n 2,", (1, 2)),
]
KWARGS = [
    ("", {}),
    ("x=1, y='a'", {"x": 1, "y": "a"}),
    ("items=[1, 2], when=None", {"items": [1, 2], "when": None}),
    ("{'x': 1, 'y': [2]}", {"x": 1, "y": [2]}),
]
BAD_ARGS = ["1), print(2", "__import__('os').system('true')", "x=1", "*a", "1 +", "f'{1}'", "a", "1 2",
            "open('/etc/passwd')", "[i for i in range(3)]", "lambda: 1", "1)(2", "\x00"]
BAD_KWARGS = ["x=print", "1, 2", "**d", "x=1, x=2", "{1: 2}", "x=1) or (2", "x=(1).__class__"]


@pytest.mark.parametrize(("text", "expected"), ARGS)
def test_args_are_literals(text, expected):
    assert parse_args(text) == expected


@pytest.mark.parametrize(("text", "expected"), KWARGS)
def test_kwargs_are_literals(text, expected):
    assert parse_kwargs(text) == expected


@pytest.mark.parametrize("text", BAD_ARGS)
def test_args_that_are_not_literals_are_refused(text):
    with pytest.raises(ScheduleError):
        parse_args(text)


@pytest.mark.parametrize("text", BAD_KWARGS)
def test_kwargs_that_are_not_literals_are_refused(text):
    with pytest.raises(ScheduleError):
        parse_kwargs(text)


def make(**fields) -> Schedule:
    fields.setdefault("func", "math.copysign")
    return Schedule(**fields)


@pytest.mark.django_db
class TestValidation:
    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"schedule_type": "C", "cron": "every tuesday"}, "cron"),
            ({"schedule_type": "C", "cron": "0 0 30 2 *"}, "cron"),
            ({"schedule_type": "C"}, "cron"),
            ({"schedule_type": "I"}, "minutes"),
            ({"schedule_type": "I", "minutes": 0}, "minutes"),
            ({"args": "os.getcwd()"}, "args"),
            ({"args": "x=1"}, "args"),
            ({"kwargs": "x=open('f')"}, "kwargs"),
            ({"func": "math.no_such_function"}, "func"),
            ({"func": "no_such_module.f"}, "func"),
            ({"func": "math.pi"}, "func"),
            ({"hook": "tests.app.tasks.no_such_hook"}, "hook"),
            ({"next_run": None}, "next_run"),
            ({"schedule_type": "ZZ"}, "schedule_type"),
        ],
    )
    def test_full_clean_refuses(self, fields, field):
        with pytest.raises(ValidationError) as caught:
            make(**fields).full_clean()
        assert field in caught.value.message_dict

    def test_a_good_schedule_is_accepted(self):
        make(args="2, -2", kwargs="", schedule_type="C", cron="0 9 * * 1-5", hook="tests.app.tasks.record_hook"
             ).full_clean()
        make(schedule_type="I", minutes=5).full_clean()
        make(next_run=None, repeats=0).full_clean()  # a finished schedule can still be edited

    def test_schedule_refuses_arguments_that_are_not_literals(self):
        with pytest.raises(ValidationError) as caught:
            schedule("math.copysign", datetime(2024, 1, 1), 2)
        assert "args" in caught.value.message_dict

    def test_schedule_stores_arguments_that_read_back_the_same(self):
        sched = schedule("tests.app.tasks.echo_kwargs", (1, 2), "x", a=[1], b={"k": None}, schedule_type="D")
        assert parse_args(sched.args) == ((1, 2), "x")
        assert parse_kwargs(sched.kwargs) == {"a": [1], "b": {"k": None}}


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("staff", password="pw", is_staff=True)


@pytest.mark.django_db(transaction=True)
class TestAdmin:
    def test_the_form_shows_validation_errors(self, admin_client):
        page = admin_client.post("/admin/django_q/schedule/add/", {
            "func": "math.copysign", "args": "2, os.sep", "kwargs": "", "schedule_type": "C", "cron": "nope",
            "repeats": "-1", "next_run_0": "2024-01-01", "next_run_1": "09:00:00",
        })
        assert page.status_code == 200
        errors = page.context["adminform"].form.errors
        assert set(errors) >= {"args", "cron"}
        assert not Schedule.objects.exists()

    def test_the_form_saves_a_good_schedule(self, admin_client):
        page = admin_client.post("/admin/django_q/schedule/add/", {
            "func": "math.copysign", "args": "2, -2", "kwargs": "", "schedule_type": "D",
            "repeats": "-1", "next_run_0": "2024-01-01", "next_run_1": "09:00:00",
        })
        assert page.status_code == 302
        assert Schedule.objects.get().args == "2, -2"

    def test_the_list_shows_next_run_last_run_result_and_success(self, admin_client, settings):
        settings.Q_CLUSTER = {"sync": True}
        sched = Schedule.objects.create(name="copy", func="math.copysign", args="2, -2", schedule_type="D")
        page = admin_client.post("/admin/django_q/schedule/", {"action": "run_now", "_selected_action": [sched.pk]})
        assert page.status_code == 302
        sched.refresh_from_db()
        assert sched.result() == -2.0 and sched.success() is True
        assert sched.last_run() == Task.objects.get(id=sched.task)
        assert sched.next_run is not None and sched.repeats == -1  # run now is outside the series
        listing = admin_client.get("/admin/django_q/schedule/").content.decode()
        assert sched.last_run().name in listing and "-2.0" in listing

    def test_run_now_of_a_failing_function_is_recorded(self, admin_client, settings):
        settings.Q_CLUSTER = {"sync": True}
        sched = Schedule.objects.create(func="tests.app.tasks.fail", kwargs="message='nope'")
        admin_client.post("/admin/django_q/schedule/", {"action": "run_now", "_selected_action": [sched.pk]})
        sched.refresh_from_db()
        assert sched.success() is False and "ValueError: nope" in sched.result()

    def test_run_now_needs_the_change_permission(self, staff):
        request = RequestFactory().get("/admin/django_q/schedule/")
        request.user = staff
        model_admin = ScheduleAdmin(Schedule, site)
        staff.user_permissions.add(Permission.objects.get(codename="view_schedule"))
        request.user = User.objects.get(pk=staff.pk)  # permissions are cached on the instance
        assert "run_now" not in model_admin.get_actions(request)
        staff.user_permissions.add(Permission.objects.get(codename="change_schedule"))
        request.user = User.objects.get(pk=staff.pk)
        assert "run_now" in model_admin.get_actions(request)

    def test_the_change_page_shows_the_last_run(self, admin_client, settings):
        settings.Q_CLUSTER = {"sync": True}
        sched = Schedule.objects.create(func="math.copysign", args="3, -1", next_run=timezone.now())
        admin_client.post("/admin/django_q/schedule/", {"action": "run_now", "_selected_action": [sched.pk]})
        page = admin_client.get(f"/admin/django_q/schedule/{sched.pk}/change/").content.decode()
        assert Task.objects.get().name in page and "-3.0" in page

    def test_saving_a_page_opened_before_a_run_does_not_put_the_run_back(self, admin_client):
        sched = Schedule.objects.create(name="old", func="math.copysign", args="1, 2", schedule_type="D",
                                        next_run=datetime(2030, 1, 1, 9, 0, tzinfo=UTC))
        shown = {
            "func": "math.copysign", "args": "1, 2", "kwargs": "", "schedule_type": "D", "repeats": "-1",
            "next_run_0": "2030-01-01", "next_run_1": "09:00:00",
        }
        shown |= {f"initial-{key}": shown[key] for key in ("repeats", "next_run_0", "next_run_1")}
        page = admin_client.get(f"/admin/django_q/schedule/{sched.pk}/change/").content.decode()
        assert 'name="initial-next_run_0" value="2030-01-01"' in page and 'name="initial-repeats"' in page
        # The scheduler runs it while the page is open.
        Schedule.objects.filter(pk=sched.pk).update(next_run=datetime(2030, 1, 2, 9, 0, tzinfo=UTC), repeats=-2,
                                                    task="f" * 32)
        page = admin_client.post(f"/admin/django_q/schedule/{sched.pk}/change/", {**shown, "name": "new"})
        assert page.status_code == 302
        sched.refresh_from_db()
        assert (sched.name, sched.next_run, sched.repeats, sched.task) == (
            "new", datetime(2030, 1, 2, 9, 0, tzinfo=UTC), -2, "f" * 32)
        # A next run the user did change is saved.
        page = admin_client.post(f"/admin/django_q/schedule/{sched.pk}/change/",
                                 {**shown, "name": "new", "next_run_0": "2030-02-01"})
        assert page.status_code == 302
        sched.refresh_from_db()
        assert sched.next_run == datetime(2030, 2, 1, 9, 0, tzinfo=UTC) and sched.repeats == -2


def test_the_scheduler_thread_waits_out_an_outage_with_a_growing_pause(monkeypatch, caplog):
    from django.db import OperationalError

    from django_q.cluster.scheduler import Scheduler, SchedulerThread
    from django_q.conf import Config

    passes: list[object] = []

    def loop(self, now=None):
        passes.append(now)
        if len(passes) <= 3:
            raise OperationalError("the database is down")
        return []

    pauses: list[float] = []

    class Stopping:
        """Records the pauses instead of waiting; stops after five passes."""

        def is_set(self) -> bool:
            return len(passes) >= 5

        def wait(self, seconds: float) -> None:
            pauses.append(seconds)

    monkeypatch.setattr(Scheduler, "loop", loop)
    thread = SchedulerThread(Config())
    thread.stopping = Stopping()
    thread.run()  # in this thread
    assert pauses == [2.0, 4.0, 8.0, 1.0, 1.0]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "the database is down" in errors[0]  # logged once per outage
    assert any("running again" in r.getMessage() for r in caplog.records)
