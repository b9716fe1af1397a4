"""Who may read the metrics view: staff sessions and the bearer of Q_CLUSTER['metrics_token'], nobody else."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from django_q.conf import get_config

pytestmark = pytest.mark.django_db

URL = "/django_q/metrics/"
TOKEN = "prometheus-scrapes-with-this-token"


@pytest.fixture(autouse=True)
def token(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "metrics_token": TOKEN}


def readable(response) -> bool:
    """Whether the response is the exposition; a refusal must also not leak the queue's name."""
    body = response.content.decode()
    if response.status_code == 403:
        assert get_config().name not in body and "django_q_" not in body
        return False
    assert response.status_code == 200, response.status_code
    assert "django_q_queue_depth" in body
    return True


def test_anonymous_gets_403(client):
    assert not readable(client.get(URL))


def test_a_logged_in_user_who_is_not_staff_gets_403(client):
    client.force_login(User.objects.create_user("member", password="pw"))
    assert not readable(client.get(URL))


def test_an_inactive_staff_user_gets_403(client):
    staff = User.objects.create_user("left", password="pw", is_staff=True)
    client.force_login(staff)
    User.objects.filter(pk=staff.pk).update(is_active=False)
    assert not readable(client.get(URL))


def test_a_staff_session_reads_it(client):
    client.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
    assert readable(client.get(URL))


def test_the_bearer_of_the_token_reads_it(client):
    assert readable(client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}))
    assert readable(client.get(URL, headers={"Authorization": f"bearer {TOKEN}"}))


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer ",
                                    "Bearer"])
def test_anything_but_the_token_gets_403(client, header):
    assert not readable(client.get(URL, headers={"Authorization": header}))


def test_without_a_configured_token_no_bearer_is_let_in(client, settings):
    settings.Q_CLUSTER = {k: v for k, v in settings.Q_CLUSTER.items() if k != "metrics_token"}
    assert not readable(client.get(URL, headers={"Authorization": "Bearer "}))
    assert not readable(client.get(URL, headers={"Authorization": "Bearer None"}))
