"""Q_CLUSTER keys of django-q 1.3 and django-q2 1.11 that Django Q does not read, and why.

A project moving over keeps its settings: a key listed in `UNNEEDED` gives a
`manage.py check` warning with its sentence and is otherwise left alone; a key
in `DROPPED_BROKERS` selects a broker Django Q does not have, and is an error
(a cluster started on it would never see the tasks queued there).
"""

from __future__ import annotations

# key -> what django-q / django-q2 did with it, and why Django Q does without it: one sentence each,
# shown after "Q_CLUSTER['key'] is ignored: ".
UNNEEDED: dict[str, str] = {
    "bulk": "django-q2 used it to set how many tasks a cluster fetched from the broker at once; "
    "Django Q sizes each fetch to what its workers can take next.",
    "cpu_affinity": "django-q2 used it to pin each worker to a number of CPUs; "
    "Django Q leaves placing its workers to the operating system.",
    "daemonize_workers": "django-q2 used it to let tasks start processes (non-daemonic workers); "
    "Django Q's workers are never daemonic, so tasks can always start processes.",
    "guard_cycle": "django-q2 used it to set how often its guard looked at the processes; "
    "Django Q's sentinel wakes as soon as one of them exits.",
    "has_replica": "django-q 1.3 used it to make the scheduler use the database router instead of the 'orm' alias; "
    "Django Q's scheduler always goes through the database router.",
    "save_limit_per": "django-q2 used it to apply save_limit per group, name or function; "
    "Django Q applies save_limit to all stored successes together.",
    "scheduler": "django-q2 used it to turn a cluster's scheduler off, so that schedules did not run twice; "
    "every Django Q cluster claims each due schedule atomically, so it runs once however many clusters are up.",
    "testing": "django-q2 used it for workarounds in its own test suite; Django Q needs none.",
    "time_zone": "django-q2 used it to read schedules in a time zone other than TIME_ZONE; "
    "Django Q reads schedules and cron expressions in TIME_ZONE.",
    "mongo_db": "django-q2 used it to name the database of its MongoDB broker, which Django Q does not have; "
    "without 'mongo' it did nothing.",
    "disque_auth": "django-q 1.3 used it as the password of its Disque broker, which Django Q does not have; "
    "without 'disque_nodes' it did nothing.",
    "disque_fastack": "django-q 1.3 used it to tune its Disque broker, which Django Q does not have; "
    "without 'disque_nodes' it did nothing.",
    "orm_poll": "no released django-q version reads it; Django Q's database broker polls every 'poll' seconds.",
    "attempt_count": "no released django-q version reads it; Django Q limits deliveries with 'max_attempts'.",
}

_INSTEAD = (
    "use Redis ('redis': a redis URL, or 'django_redis': a django-redis cache alias) "
    "or the database broker ('orm': a database alias, or no broker key at all)"
)

# key -> why it is refused; each message is preceded by Q_CLUSTER['key'].
DROPPED_BROKERS: dict[str, str] = {
    "sqs": f"the Amazon SQS broker is not supported; {_INSTEAD}",
    "iron_mq": f"the IronMQ broker is not supported; {_INSTEAD}",
    "mongo": f"the MongoDB broker is not supported; {_INSTEAD}",
    "disque_nodes": f"the Disque broker is not supported; {_INSTEAD}",
    "broker_class": f"a custom broker class is not supported; {_INSTEAD}",
}
