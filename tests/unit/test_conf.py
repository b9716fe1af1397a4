"""Q_CLUSTER: defaults, validation of every key, flat settings, masking, and lazy reloading."""

import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_q.brokers import close_brokers, get_broker
from django_q.conf import IGNORED_KEYS, Config, build_config, get_config
from django_q.exceptions import ConfigurationError, DjangoQError

from .helpers import UNREACHABLE_REDIS


def test_defaults_with_an_empty_q_cluster(q_cluster):
    q_cluster()
    config = get_config()
    workers = os.cpu_count() or 1
    assert config.workers == workers
    assert config.queue_limit == workers**2
    assert (config.name, config.timeout, config.retry, config.max_attempts) == ("default", None, 60.0, 0)
    assert (config.compress, config.save_limit, config.sync) == (False, 100, False)
    assert (config.redis, config.orm, config.poll, config.recycle) == (None, None, 0.2, 500)
    assert (config.max_rss, config.ack_failures, config.catch_up) == (None, True, True)
    assert (config.label, config.serializer) == ("Django Q", "pickle")
    assert (config.admin_funcs, config.metrics_token) == ((), None)
    assert (config.dead_letter_limit, config.enqueue_timeout) == (10_000, 5.0)


def test_no_q_cluster_setting_at_all_means_the_defaults_and_the_database_broker(settings):
    del settings.Q_CLUSTER
    config = get_config()
    assert config.name == "default"
    assert config.broker_kind == "orm"
    assert config.orm_alias == "default"


def test_queue_limit_follows_the_configured_workers(q_cluster):
    q_cluster(workers=3)
    assert get_config().queue_limit == 9


def test_an_explicit_queue_limit_wins(q_cluster):
    q_cluster(workers=3, queue_limit=5)
    assert get_config().queue_limit == 5


GOOD_VALUES = [
    ("name", "emails", "emails"),
    ("queues", ["high", "default"], ("high", "default")),
    ("queues", ("only",), ("only",)),
    ("workers", 4, 4),
    ("timeout", 30, 30.0),
    ("timeout", None, None),
    ("retry", 2.5, 2.5),
    ("max_attempts", 3, 3),
    ("compress", True, True),
    ("save_limit", -1, -1),
    ("save_limit", 0, 0),
    ("sync", True, True),
    ("redis", "redis://localhost:6379/3", "redis://localhost:6379/3"),
    ("redis", {"host": "localhost", "db": 3}, {"host": "localhost", "db": 3}),
    ("orm", "default", "default"),
    ("poll", 1, 1.0),
    ("recycle", 10, 10),
    ("max_rss", 200_000, 200_000),
    ("queue_limit", 7, 7),
    ("ack_failures", False, False),
    ("catch_up", False, False),
    ("label", "Jobs", "Jobs"),
    ("serializer", "json", "json"),
    ("package_limit", 1024, 1024),
    ("cancel_grace", 2, 2.0),
    ("on_commit", True, True),
    ("preload_tasks", False, False),
    ("cached", 300, 300),
    ("cache", "default", "default"),
    ("admin_funcs", ["tests.app.tasks.add", "tests.app."], ("tests.app.tasks.add", "tests.app.")),
    ("admin_funcs", (), ()),
    ("metrics_token", "x" * 32, "x" * 32),
    ("metrics_token", None, None),
    ("metrics_functions", True, True),
    ("dead_letter_limit", 50, 50),
    ("enqueue_timeout", 2, 2.0),
]


@pytest.mark.parametrize(("key", "value", "expected"), GOOD_VALUES)
def test_a_good_value_is_taken(q_cluster, key, value, expected):
    q_cluster(**{key: value})
    assert getattr(get_config(), key) == expected


def test_numbers_of_seconds_become_floats(q_cluster):
    q_cluster(timeout=30, retry=5, poll=1)
    config = get_config()
    assert [type(v) for v in (config.timeout, config.retry, config.poll)] == [float, float, float]


BAD_VALUES = [
    ("name", ""),
    ("name", "a:b"),
    ("name", 5),
    ("workers", 0),
    ("workers", -1),
    ("workers", 1.5),
    ("workers", True),
    ("workers", "4"),
    ("timeout", 0),
    ("timeout", -1),
    ("timeout", "10"),
    ("timeout", True),
    ("retry", 0),
    ("retry", None),
    ("retry", "60"),
    ("retry", False),
    ("max_attempts", -1),
    ("max_attempts", 1.5),
    ("max_attempts", True),
    ("compress", 1),
    ("compress", "yes"),
    ("compress", None),
    ("save_limit", -2),
    ("save_limit", 1.5),
    ("save_limit", "10"),
    ("save_limit", True),
    ("sync", 1),
    ("sync", "true"),
    ("redis", 6379),
    ("redis", ["redis://localhost"]),
    ("redis", True),
    ("orm", "no-such-alias"),
    ("orm", 1),
    ("poll", 0),
    ("poll", -0.1),
    ("poll", "0.2"),
    ("recycle", 0),
    ("recycle", 1.5),
    ("max_rss", 0),
    ("max_rss", -5),
    ("max_rss", 1.5),
    ("queue_limit", 0),
    ("queue_limit", 2.5),
    ("ack_failures", 0),
    ("ack_failures", None),
    ("catch_up", "no"),
    ("label", 5),
    ("label", None),
    ("serializer", "yaml"),
    ("serializer", None),
    ("package_limit", 0),
    ("package_limit", 1.5),
    ("cancel_grace", -1),
    ("cancel_grace", "5"),
    ("on_commit", 1),
    ("on_commit", "yes"),
    ("preload_tasks", 0),
    ("preload_tasks", "no"),
    ("cached", 0),
    ("cached", -5),
    ("cached", "yes"),
    ("cache", "nosuchcache"),
    ("cache", None),
    ("admin_funcs", "tests.app.tasks.add"),
    ("admin_funcs", ["add"]),
    ("admin_funcs", ["tests.app tasks"]),
    ("admin_funcs", [None]),
    ("admin_funcs", ["os.system"]),
    ("admin_funcs", ["tests.app.tasks.add", "builtins."]),
    ("metrics_token", "short"),
    ("metrics_token", 12345678901234567),
    ("metrics_functions", "yes"),
    ("dead_letter_limit", 0),
    ("dead_letter_limit", 1.5),
    ("enqueue_timeout", 0),
    ("enqueue_timeout", "5"),
    ("log_level", "LOUD"),
    ("log_level", 1.5),
    ("log_level", None),
    ("error_reporter", ["sentry"]),
    ("error_reporter", {"sentry": "https://key@sentry.example/1"}),
    ("django_redis", "no-such-cache"),
    ("django_redis", 1),
    ("rate_limits", ["app.tasks.send_mail", "1/s"]),
    ("queues", []),
    ("queues", "high"),
    ("queues", ["high", "high"]),
    ("queues", ["high", ""]),
    ("queues", ["a:b"]),
    ("queues", [None]),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_a_bad_value_is_a_configuration_error_naming_the_key(q_cluster, key, value):
    q_cluster(**{key: value})
    with pytest.raises(ConfigurationError) as info:
        get_config()
    assert f"Q_CLUSTER['{key}']" in str(info.value)
    assert repr(value) in str(info.value)


def test_every_key_has_bad_values_in_the_table():
    assert {key for key, _ in BAD_VALUES} == {f for f in Config.__dataclass_fields__}


def test_configuration_error_is_improperly_configured_and_a_django_q_error(q_cluster):
    q_cluster(workers=0)
    with pytest.raises(ConfigurationError) as info:
        build_config()
    assert isinstance(info.value, ImproperlyConfigured)
    assert isinstance(info.value, DjangoQError)


def test_an_unknown_key_is_refused_by_name(q_cluster):
    q_cluster(wokers=4)
    with pytest.raises(ConfigurationError, match=r"Q_CLUSTER\['wokers'\]: unknown key"):
        get_config()


def test_a_q_cluster_that_is_not_a_dict_is_refused(settings):
    settings.Q_CLUSTER = "redis://localhost"
    with pytest.raises(ConfigurationError, match="Q_CLUSTER must be a dict"):
        get_config()


def test_an_empty_list_is_not_a_dict_either(settings):
    settings.Q_CLUSTER = []
    with pytest.raises(ConfigurationError, match="Q_CLUSTER must be a dict"):
        get_config()


@pytest.mark.parametrize("key", sorted(IGNORED_KEYS))
def test_django_q2_keys_are_accepted_and_ignored(q_cluster, key):
    q_cluster(workers=2, **{key: "anything"})
    config = get_config()
    assert config.workers == 2
    assert not hasattr(config, key)


def test_with_redis_and_orm_the_database_broker_is_used_as_in_django_q2(q_cluster):
    q_cluster(redis="redis://localhost", orm="default")
    config = get_config()
    assert (config.broker_kind, config.orm_alias, config.redis) == ("orm", "default", None)


def test_broker_kind_follows_the_configuration(q_cluster):
    q_cluster(redis="redis://localhost")
    assert get_config().broker_kind == "redis"
    q_cluster(orm="default")
    assert (get_config().broker_kind, get_config().orm_alias) == ("orm", "default")


class TestFlatSettings:
    def test_flat_settings_are_honoured_when_q_cluster_lacks_the_key(self, settings, q_cluster):
        q_cluster()
        settings.Q_WORKERS = 7
        settings.Q_COMPRESSED = True
        settings.Q_SAVE_LIMIT = 5
        config = get_config()
        assert (config.workers, config.compress, config.save_limit) == (7, True, 5)
        assert config.queue_limit == 49

    def test_q_cluster_wins_over_flat_settings(self, settings, q_cluster):
        q_cluster(workers=2, compress=False, save_limit=50)
        settings.Q_WORKERS = 7
        settings.Q_COMPRESSED = True
        settings.Q_SAVE_LIMIT = 5
        config = get_config()
        assert (config.workers, config.compress, config.save_limit) == (2, False, 50)

    @pytest.mark.parametrize(("flat", "value"), [("Q_WORKERS", 0), ("Q_COMPRESSED", "yes"), ("Q_SAVE_LIMIT", -5)])
    def test_a_bad_flat_setting_is_refused_by_its_name(self, settings, q_cluster, flat, value):
        q_cluster()
        setattr(settings, flat, value)
        with pytest.raises(ConfigurationError) as info:
            get_config()
        assert str(info.value).startswith(f"{flat} must be")

    def test_a_bad_flat_setting_shadowed_by_q_cluster_is_not_read(self, settings, q_cluster):
        q_cluster(workers=2)
        settings.Q_WORKERS = 0
        assert get_config().workers == 2


class TestMasked:
    def test_a_password_in_a_redis_url_is_hidden(self, q_cluster):
        q_cluster(redis="redis://user:s3cret@cache.example:6379/0")
        masked = get_config().masked()
        assert masked["redis"] == "redis://user:***@cache.example:6379/0"
        assert "s3cret" not in repr(masked)

    def test_a_password_without_user_is_hidden(self, q_cluster):
        q_cluster(redis="rediss://:s3cret@cache.example:6380/1")
        assert get_config().masked()["redis"] == "rediss://:***@cache.example:6380/1"

    def test_passwords_in_a_redis_dict_are_hidden(self, q_cluster):
        q_cluster(redis={"host": "cache.example", "password": "s3cret", "ssl_password": "k3y", "db": 2})
        masked = get_config().masked()
        assert masked["redis"] == {"host": "cache.example", "password": "***", "ssl_password": "***", "db": 2}
        assert get_config().redis["password"] == "s3cret", "masking must not change the configuration"

    def test_a_url_without_a_password_is_unchanged(self, q_cluster):
        q_cluster(redis="redis://user@cache.example:6379/0")
        assert get_config().masked()["redis"] == "redis://user@cache.example:6379/0"

    def test_masked_holds_every_setting(self, q_cluster):
        q_cluster(workers=3)
        masked = get_config().masked()
        assert set(masked) == set(Config.__dataclass_fields__)
        assert masked["workers"] == 3

    def test_the_metrics_token_is_hidden(self, q_cluster):
        q_cluster(metrics_token="s3cret-token-of-prometheus")
        assert get_config().masked()["metrics_token"] == "***"
        assert "s3cret" not in repr(get_config().masked())

    def test_a_password_containing_an_at_sign_is_hidden_entirely(self, q_cluster):
        q_cluster(redis="redis://user:p@ssword@cache.example:6379/0")
        assert "ssword" not in repr(get_config().masked())

    def test_a_password_in_the_query_string_is_hidden(self, q_cluster):
        q_cluster(redis="redis://cache.example:6379/0?password=s3cret")
        assert "s3cret" not in repr(get_config().masked())


class TestLazyReload:
    def test_override_settings_takes_effect_and_is_undone(self, q_cluster):
        q_cluster(name="outer", workers=2)
        assert get_config().name == "outer"
        with override_settings(Q_CLUSTER={"name": "inner", "workers": 5}):
            assert (get_config().name, get_config().workers) == ("inner", 5)
        assert (get_config().name, get_config().workers) == ("outer", 2)

    @override_settings(Q_CLUSTER={"name": "decorated"})
    def test_override_settings_as_a_decorator(self):
        assert get_config().name == "decorated"

    def test_the_config_is_cached_until_a_setting_changes(self, q_cluster, settings):
        q_cluster(workers=2)
        first = get_config()
        assert get_config() is first
        settings.Q_WORKERS = 3  # a setting conf depends on: the cache is dropped
        assert get_config() is not first

    def test_a_bad_setting_is_not_read_before_it_is_used(self, q_cluster):
        q_cluster(workers="many")  # no error here: nothing reads Q_CLUSTER at assignment
        with pytest.raises(ConfigurationError):
            get_config()

    def test_a_changed_setting_reaches_the_broker(self):
        close_brokers()
        stale = None
        try:
            for retry in range(1, 301):  # the freed Config's id comes back within a few rounds
                with override_settings(Q_CLUSTER={"redis": UNREACHABLE_REDIS, "retry": retry}):
                    lease = get_broker().lease
                if lease != retry:
                    stale = (retry, lease)
                    break
        finally:
            close_brokers()
        assert stale is None, f"Q_CLUSTER retry={stale[0]} got the broker made for retry={stale[1]}"
