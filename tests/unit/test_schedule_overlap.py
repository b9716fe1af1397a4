"""Schedule.overlap: the plan of a busy occurrence, and the field in the admin."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from django_q.models import Schedule
from django_q.schedules import plan

NOW = datetime(2024, 6, 15, 12, 0, 30, tzinfo=UTC)
DUE = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)


def test_a_busy_occurrence_is_skipped_and_not_counted():
    step = plan("H", DUE, 5, NOW, UTC, busy=True)
    assert (step.run, step.repeats, step.next_run) == (False, 5, datetime(2024, 6, 15, 13, 0, tzinfo=UTC))
    step = plan("H", DUE, 1, NOW, UTC, busy=True)  # a last run skipped is not the end of the schedule
    assert (step.run, step.repeats, step.next_run) == (False, 1, datetime(2024, 6, 15, 13, 0, tzinfo=UTC))


def test_a_claimed_run_and_a_once_schedule_run_even_if_busy():
    assert plan("H", DUE, 5, NOW, UTC, busy=True, claimed=True).run
    assert plan("O", DUE, 1, NOW, UTC, busy=True).run


@pytest.mark.django_db(transaction=True)
class TestAdmin:
    FORM = {"func": "math.copysign", "args": "2, -2", "kwargs": "", "schedule_type": "D", "repeats": "-1",
            "next_run_0": "2024-01-01", "next_run_1": "09:00:00"}

    def test_the_add_page_offers_overlap_checked(self, admin_client):
        page = admin_client.get("/admin/django_q/schedule/add/").content.decode()
        assert 'name="overlap"' in page
        assert admin_client.get("/admin/django_q/schedule/add/").context["adminform"].form["overlap"].value()

    @pytest.mark.parametrize(("sent", "stored"), [({"overlap": "on"}, True), ({}, False)])
    def test_the_form_saves_overlap(self, admin_client, sent, stored):
        page = admin_client.post("/admin/django_q/schedule/add/", {**self.FORM, **sent})
        assert page.status_code == 302
        assert Schedule.objects.get().overlap is stored
