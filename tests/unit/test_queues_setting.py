"""Q_CLUSTER['queues'] and qcluster -q: which queues a cluster serves, in which order, and how they relate to name."""

from dataclasses import replace

import pytest
from django.core.management import CommandError, call_command

from django_q.conf import Config, build_config


def test_a_cluster_serves_its_name_unless_queues_are_given(q_cluster):
    q_cluster(name="emails")
    assert build_config().served_queues == ("emails",)
    q_cluster(name="emails", queues=["high", "emails", "low"])
    config = build_config()
    assert (config.name, config.served_queues) == ("emails", ("high", "emails", "low"))


def test_qcluster_q_overrides_the_setting_in_its_order(q_cluster):
    q_cluster(queues=["a", "b"])
    assert build_config(queues=["low", "high"]).served_queues == ("low", "high")


def test_alt_clusters_may_give_a_named_cluster_its_queues(q_cluster):
    q_cluster(name="main", ALT_CLUSTERS={"fast": {"queues": ["urgent", "fast"]}})
    config = build_config("fast")
    assert (config.name, config.served_queues) == ("fast", ("urgent", "fast"))
    assert build_config().served_queues == ("main",)


def test_a_renamed_config_serves_its_new_name():
    assert replace(Config(name="a"), name="b").served_queues == ("b",)


@pytest.mark.parametrize("bad", [["x", "x"], ["x:y"], [""]])
def test_a_bad_q_flag_stops_qcluster_with_one_line_naming_it(q_cluster, bad):
    q_cluster()
    args = [arg for q in bad for arg in ("-q", q)]
    with pytest.raises(CommandError, match=r"qcluster -q must be a non-empty list of distinct queue names"):
        call_command("qcluster", *args)


@pytest.mark.django_db(transaction=True)
def test_qcluster_runs_a_cluster_of_the_queues_of_its_q_flags(q_cluster, monkeypatch):
    from django_q.management.commands import qcluster

    q_cluster(name="main", queues=["main"])
    started = []
    monkeypatch.setattr(qcluster, "run", lambda config, **options: started.append(config))
    call_command("qcluster", "-q", "urgent", "-q", "main", "-q", "bulk")
    assert [(c.name, c.served_queues) for c in started] == [("main", ("urgent", "main", "bulk"))]


def test_queues_is_checked_by_manage_py_check(q_cluster):
    from django_q.apps import check_settings

    q_cluster(queues=["a", "a"])
    assert "Q_CLUSTER['queues']" in str(check_settings())
