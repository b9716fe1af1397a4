"""What each Q_CLUSTER key means, for the settings table (djq_reference.settings_rows).

The keys, their defaults and the values they take come from django_q.conf;
only the meaning is written here. A key django_q.conf accepts that is missing
here (or one here it no longer accepts) fails the docs build.
"""

# Defaults that Config computes (or shows better in words) rather than stores.
DEFAULTS = {
    "workers": "CPU count",
    "queue_limit": "`workers**2`",
    "max_attempts": "`0` (no limit)",
    "package_limit": "`16777216` (16 MiB)",
    "cluster_name": "—",
    "queues": "`[name]`",
    "rate_limits": "`{}`",
}

MEANINGS = {
    "name": "cluster / queue name; clusters with the same name share one queue",
    "queues": "the queues the cluster serves, in order: a ready task of an earlier queue starts before any of a "
    "later one (how-to: several queues in one cluster); `qcluster -q` overrides it",
    "workers": "worker processes",
    "timeout": "seconds a task may run before its worker is killed and replaced",
    "retry": "seconds after which a task whose cluster stopped renewing its lease is delivered again; a running "
    "task's lease is renewed while it runs, so a long task is never delivered twice. A whole cluster that dies "
    "(its host, every process) loses its leases sooner, within about 7 s (delivery guarantees: a dead host)",
    "max_attempts": "deliveries of one task before it is recorded as failed for good",
    "compress": "zlib-compress packages before they go to the broker",
    "save_limit": "successful results kept (oldest pruned); `0` keeps all, `-1` keeps none; failures are always kept",
    "sync": "run tasks in the calling process (for tests and debugging)",
    "redis": "a redis URL or a dict of `redis.Redis` arguments: use the Redis broker (a dict with `sentinels` "
    "goes through Redis Sentinel)",
    "orm": "a database alias: use the database broker on that database",
    "poll": "the database broker's idle poll interval, seconds (PostgreSQL and SQLite also wake on an enqueue)",
    "recycle": "tasks a worker runs before it is replaced",
    "max_rss": "KiB; a worker above it is replaced after its task",
    "queue_limit": "tasks the pusher holds in memory ahead of the workers, at least (more for short tasks, and "
    "as many as the workers take in three round trips to the broker)",
    "ack_failures": "a task that raised is recorded as failed and not run again (`False`: it is delivered again "
    "until `max_attempts`)",
    "catch_up": "run missed schedule occurrences once after downtime",
    "label": "the admin section's title",
    "serializer": "`pickle` or `json`; every package is signed either way",
    "package_limit": "bytes of a package before compression; a bigger task raises `PackageTooLarge` in "
    "`async_task`, and one that reaches a cluster anyway is dead-lettered, keeping only its header",
    "cancel_grace": "seconds a cancelled running task has to stop before its worker is killed",
    "on_commit": "enqueue only when the current transaction of the default database commits",
    "preload_tasks": "a new worker (after `recycle`, `max_rss` or a crash) is forked with the modules of the tasks "
    "run so far already imported",
    "cached": "django-q2's: every result goes to Django's cache instead of the database (`True`, or seconds to "
    "keep it)",
    "cache": "the alias of `CACHES` that cached results go to",
    "admin_funcs": "functions staff who are not superusers may schedule in the admin: dotted paths or module "
    "prefixes ending in `.`",
    "metrics_token": "requests with `Authorization: Bearer <token>` may read the metrics view (staff sessions "
    "always may)",
    "metrics_functions": "per-function counters and a run-time histogram in the metrics view; off by default "
    "since every task function becomes a label value",
    "dead_letter_limit": "dead letters kept; past it the oldest are deleted, with a log line",
    "enqueue_timeout": "seconds `async_task` waits on a Redis broker that does not answer before it raises "
    "`BrokerConnectionError`",
    "log_level": "the `django_q` logger's level in every cluster process; without it (and without a `LOGGING` "
    "entry for it) `qcluster` logs at INFO to stderr",
    "error_reporter": "error reporter plugins and their options, as in django-q2: `{\"sentry\": {\"dsn\": ...}}`",
    "django_redis": "a `CACHES` alias of a django-redis cache: use the Redis broker on the connection "
    "django-redis keeps for it",
    "cluster_name": "django-q2's queue name: the same as `name` here",
    "rate_limits": "at most N starts a second, minute or hour of a function or a group, across every cluster of "
    "the queue: `{\"app.tasks.send_mail\": \"100/m\", \"group:reports\": \"5/h\"}` (how-to: rate limits)",
}
