"""Q_CLUSTER settings shown in the guides; tests/unit/test_docs_examples.py validates each one."""

# The default: no broker key, so the database broker on the "default" database.
DATABASE = {
    "name": "myproject",
    "workers": 4,
    "timeout": 300,  # seconds; a task running longer is killed
    "retry": 360,  # seconds; more than timeout, so a slow task is not handed out twice
}

# PostgreSQL or MariaDB in a database alias of its own (here "queue").
DATABASE_ALIAS = {**DATABASE, "orm": "queue", "poll": 0.5}

REDIS = {
    "name": "myproject",
    "workers": 8,
    "timeout": 300,
    "retry": 360,
    "redis": "redis://:secret@redis.internal:6379/0",
}

# Redis Sentinel: a dict with "sentinels" and "service_name"; the other keys go to redis.Redis.
REDIS_SENTINEL = {
    "name": "myproject",
    "redis": {
        "sentinels": [["10.0.0.1", 26379], ["10.0.0.2", 26379], ["10.0.0.3", 26379]],
        "service_name": "mymaster",
        "password": "secret",  # the Redis primary's password
        "db": 0,
    },
}

# Errors of failed tasks to Sentry, through the django-q-sentry plugin.
SENTRY = {**DATABASE, "error_reporter": {"sentry": {"dsn": "https://key@o0.ingest.sentry.io/0"}}}

# Prometheus scrapes with a bearer token; per-function series on.
METRICS = {**DATABASE, "metrics_token": "a-long-random-string-of-32-chars", "metrics_functions": True}
