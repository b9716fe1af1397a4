"""The Q_CLUSTER keys of django-q 1.3 and django-q2 1.11: each is honoured, warned about, or (a broker
Django Q does not have) refused, and none is an unknown key."""

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_q import oldsettings
from django_q.apps import check_settings
from django_q.conf import Config, build_config, get_config
from django_q.exceptions import ConfigurationError, UnsupportedBroker

# Every key the Conf class of django-q 1.3.9 (django_q/conf.py) reads, with a value as a project sets it.
DJANGO_Q_13 = {
    "redis": {"host": "127.0.0.1", "port": 6379, "db": 0},
    "django_redis": "djredis",  # a django-redis cache of the test settings
    "disque_nodes": ["127.0.0.1:7711"],
    "disque_auth": "secret",
    "disque_fastack": True,
    "iron_mq": {"token": "t", "project_id": "p"},
    "sqs": {"aws_region": "us-east-1"},
    "orm": "default",
    "has_replica": True,
    "broker_class": "myapp.brokers.MyBroker",
    "poll": 0.5,
    "mongo": {"host": "127.0.0.1"},
    "mongo_db": "queue",
    "name": "site",
    "log_level": "DEBUG",
    "save_limit": 250,
    "guard_cycle": 0.5,
    "scheduler": True,
    "workers": 4,
    "daemonize_workers": True,
    "queue_limit": 16,
    "compress": True,
    "recycle": 500,
    "max_rss": 200_000,
    "timeout": 60,
    "ack_failures": False,
    "retry": 120,
    "bulk": 10,
    "label": "Task queue",
    "cpu_affinity": 1,
    "sync": False,
    "cache": "default",
    "cached": 60,
    "catch_up": True,
    "error_reporter": {"sentry": {"dsn": "https://key@sentry.example/1"}},
    "max_attempts": 3,
    "testing": False,
}
# django-q2 1.11.1 reads these too, and no longer the Disque keys nor has_replica.
DJANGO_Q2_111 = {
    **{k: v for k, v in DJANGO_Q_13.items() if not k.startswith("disque") and k != "has_replica"},
    "cluster_name": "long",
    "save_limit_per": "group",
    "time_zone": "Europe/Amsterdam",
    "ALT_CLUSTERS": {"long": {"timeout": 3600, "retry": 4000}},
}
HONOURED = {field for field in Config.__dataclass_fields__} | {"cluster_name", "ALT_CLUSTERS"}
BROKER_KEYS = {"redis", "django_redis", "orm", *oldsettings.DROPPED_BROKERS}


def test_every_key_of_both_is_honoured_ignored_or_a_dropped_broker():
    known = HONOURED | set(oldsettings.UNNEEDED) | set(oldsettings.DROPPED_BROKERS)
    assert set(DJANGO_Q_13) - known == set()
    assert set(DJANGO_Q2_111) - known == set()


@pytest.mark.parametrize("key", sorted(set(DJANGO_Q_13) | set(DJANGO_Q2_111)))
def test_each_key_alone_is_not_an_unknown_key(q_cluster, key):
    q_cluster(**{key: {**DJANGO_Q_13, **DJANGO_Q2_111}[key]})
    if key in oldsettings.DROPPED_BROKERS:
        with pytest.raises(UnsupportedBroker):
            build_config()
    else:
        build_config()


def q2_project_settings() -> dict:
    """A django-q2 project's Q_CLUSTER with every key it reads, on a broker Django Q has (Redis)."""
    conf = {k: v for k, v in DJANGO_Q2_111.items() if k not in BROKER_KEYS}
    conf["redis"] = "redis://127.0.0.1:6379/14"
    conf["error_reporter"] = {}
    return conf


def test_a_django_q2_settings_dict_gives_a_warning_per_ignored_key_and_no_error(q_cluster):
    q_cluster(**q2_project_settings())
    messages = check_settings()
    assert not [m for m in messages if m.is_serious()], [m.msg for m in messages]
    ignored = sorted(set(q2_project_settings()) & set(oldsettings.UNNEEDED))
    assert [(m.id, m.msg) for m in messages] == [
        ("django_q.W001", f"Q_CLUSTER['{key}'] is ignored: {oldsettings.UNNEEDED[key]}") for key in ignored
    ]
    config = get_config()
    assert (config.name, config.log_level, config.label, config.timeout) == ("long", "DEBUG", "Task queue", 60.0)


@pytest.mark.parametrize("key", sorted(oldsettings.UNNEEDED))
def test_each_warning_is_one_sentence_saying_what_it_did_and_why_not_here(key):
    why = oldsettings.UNNEEDED[key]
    assert why.endswith(".") and why.count(". ") == 0
    assert "django-q" in why and "Django Q" in why


@pytest.mark.parametrize("key", sorted(oldsettings.DROPPED_BROKERS))
def test_a_dropped_broker_is_check_error_e002_naming_the_key_and_what_to_use(q_cluster, key):
    q_cluster(**{key: DJANGO_Q_13[key]})
    [message] = [m for m in check_settings() if m.is_serious()]
    assert message.id == "django_q.E002"
    assert message.msg.startswith(f"Q_CLUSTER['{key}']: ")
    assert "not supported" in message.msg and "'redis'" in message.msg and "'orm'" in message.msg


@pytest.mark.parametrize("key", sorted(oldsettings.DROPPED_BROKERS))
def test_a_dropped_broker_stops_qcluster_with_one_line(q_cluster, key):
    q_cluster(**{key: DJANGO_Q_13[key]})
    with pytest.raises(CommandError) as info:
        call_command("qcluster", stdout=StringIO(), stderr=StringIO())
    assert f"Q_CLUSTER['{key}']" in str(info.value) and "\n" not in str(info.value)


def test_cluster_name_is_the_queue_name(q_cluster):
    q_cluster(name="site", cluster_name="long")
    assert get_config().name == "long"


def test_cluster_name_is_checked_as_a_name(q_cluster):
    q_cluster(cluster_name="a:b")
    with pytest.raises(ConfigurationError, match=r"Q_CLUSTER\['cluster_name'\]"):
        get_config()


@pytest.mark.parametrize(("given", "kept"), [("debug", "DEBUG"), ("WARNING", "WARNING"), (10, 10)])
def test_log_level_takes_a_level_name_or_number(q_cluster, given, kept):
    q_cluster(log_level=given)
    assert get_config().log_level == kept


def test_error_reporter_options_are_masked_in_qinfo(q_cluster):
    q_cluster(error_reporter={"sentry": {"dsn": "https://secret@sentry.example/1"}})
    assert get_config().masked()["error_reporter"] == {"sentry": {"dsn": "***"}}


@pytest.mark.parametrize(
    ("conf", "kind", "ignored"),
    [
        ({"django_redis": "djredis", "redis": "redis://127.0.0.1"}, "redis", ["redis"]),
        ({"django_redis": "djredis", "orm": "default"}, "orm", ["django_redis"]),
        ({"redis": "redis://127.0.0.1", "orm": "default"}, "orm", ["redis"]),
        ({"redis": "redis://127.0.0.1", "orm": "default", "django_redis": "djredis"}, "orm", ["django_redis", "redis"]),
    ],
)
def test_with_several_broker_keys_the_first_django_q2_used_wins_and_the_others_are_w004(q_cluster, conf, kind,
                                                                                          ignored):
    q_cluster(**conf)
    config = get_config()
    assert config.broker_kind == kind
    assert (config.django_redis is not None) == (kind == "redis" and "django_redis" in conf)
    messages = check_settings()
    assert [m.id for m in messages] == ["django_q.W004"] * len(ignored)
    assert [m.msg.split("]")[0] for m in messages] == [f"Q_CLUSTER['{key}'" for key in ignored]


@pytest.mark.django_db
def test_label_is_the_admin_section_title(admin_client):
    app = apps.get_app_config("django_q")
    before = app.verbose_name
    try:
        with override_settings(Q_CLUSTER={"label": "Background jobs"}):
            app.ready()  # the label is read as the app is loaded
            page = admin_client.get("/admin/").content.decode()
    finally:
        app.verbose_name = before
    assert "Background jobs" in page


def test_logging_of_django_q2s_logger_name_is_warning_w003(q_cluster, settings):
    q_cluster()
    settings.LOGGING = {"version": 1, "loggers": {"django-q": {"level": "DEBUG"}}}
    [message] = check_settings()
    assert message.id == "django_q.W003" and "'django-q'" in message.msg and "'django_q'" in message.msg
    settings.LOGGING = {"version": 1, "loggers": {"django-q": {"level": "DEBUG"}, "django_q": {"level": "DEBUG"}}}
    assert check_settings() == []


ALT = {"name": "site", "timeout": 60, "retry": 90, "ALT_CLUSTERS": {"long": {"timeout": 3600, "retry": 4000, "name": "x"}}}


def test_q_cluster_name_picks_the_queue_and_its_alt_clusters_entry(q_cluster, monkeypatch):
    q_cluster(**ALT)
    assert (get_config().name, get_config().timeout) == ("site", 60.0)
    monkeypatch.setenv("Q_CLUSTER_NAME", "long")
    config = build_config()
    assert (config.name, config.timeout, config.retry) == ("long", 3600.0, 4000.0)
    monkeypatch.setenv("Q_CLUSTER_NAME", "other")  # a queue without overrides
    assert (build_config().name, build_config().timeout) == ("other", 60.0)


def test_qcluster_n_picks_the_alt_clusters_entry_too(q_cluster):
    q_cluster(**ALT)
    config = build_config("long")
    assert (config.name, config.timeout) == ("long", 3600.0)


def test_alt_clusters_must_be_a_dict_of_dicts(q_cluster):
    q_cluster(ALT_CLUSTERS={"long": 5})
    with pytest.raises(ConfigurationError, match=r"Q_CLUSTER\['ALT_CLUSTERS'\] must be a dict"):
        build_config()


def test_a_bad_alt_clusters_value_is_named_as_its_key(q_cluster, monkeypatch):
    q_cluster(ALT_CLUSTERS={"long": {"timeout": -1}})
    monkeypatch.setenv("Q_CLUSTER_NAME", "long")
    with pytest.raises(ConfigurationError, match=r"Q_CLUSTER\['timeout'\]"):
        build_config()
