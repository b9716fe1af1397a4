"""Refuse to measure while a process outside the bench uses its stores: Redis db 12 and 15, a PostgreSQL bench database.

lock.py keeps two bench runs apart, but nothing else stops a stray cluster (a
scratch script, a test, another tool) from consuming the bench's queue or
writing its counter: one made a run report 869 of 5,000 tasks done, and another
report all 5,000 done at t=0. So before each run (Runner.prepare) the harness
lists the clients of its Redis databases (CLIENT LIST) and, for a PostgreSQL
target, the backends of its database (pg_stat_activity), and stops the session
with Foreign if any is not its own. The harness's own connections carry
harness_name() (CLIENT SETNAME, application_name): one name per harness process.

The previous run's workers were killed just before: the kernel closes their
sockets at once, but Redis and PostgreSQL may list them a moment longer, so a
client counts only if it is still there after GRACE seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from typing import TypeVar

import redis

GRACE = 2.0  # seconds a client of the previous run may take to disappear
POLL = 0.05  # seconds between two looks
POSTGRES_DSN = "host=127.0.0.1 user=postgres dbname=postgres"  # the guard's own look, from outside the bench databases

T = TypeVar("T")


class Foreign(SystemExit):
    """A process outside the bench uses its Redis databases or PostgreSQL database: nothing is measured."""


def harness_name() -> str:
    """The name of this harness process's connections, which the guard leaves out; unique per process."""
    return f"dq-bench-harness-{os.getpid()}"


def redis_client(url: str) -> redis.Redis:
    """A harness connection to `url`: every connection of its pool is named harness_name()."""
    return redis.Redis.from_url(url, client_name=harness_name())


def check(client: redis.Redis, dbs: Collection[int], database: str | None = None) -> None:
    """Before a run: check_redis on `dbs`, then check_postgres on `database` if the run uses one."""
    check_redis(client, dbs)
    if database is not None:
        check_postgres(database)


def check_redis(client: redis.Redis, dbs: Collection[int], grace: float = GRACE, poll: float = POLL) -> None:
    """Raise Foreign naming every client of `dbs` not named harness_name() still connected after `grace` seconds."""
    found = _lingering(lambda: redis_foreign(client, dbs), grace, poll)
    if not found:
        return
    kw = client.connection_pool.connection_kwargs
    where = f"Redis db {', '.join(map(str, sorted(dbs)))} on {kw.get('host')}:{kw.get('port')}"
    lines = "\n".join(f"  {describe_redis(c)}" for c in found)
    raise Foreign(f"bench: {len(found)} client(s) outside the bench use {where}; nothing measured:\n{lines}\n"
                  f"bench: such a client can consume the bench's queue or write its counter and falsify every figure; "
                  f"stop the process that holds it (on this machine `ss -tnp src <addr>` names it), then run again")


def redis_foreign(client: redis.Redis, dbs: Collection[int]) -> list[dict]:
    """The clients of `dbs` now, the harness's own left out."""
    own = harness_name()
    return [c for c in client.client_list() if int(c["db"]) in dbs and c.get("name") != own]


def describe_redis(c: dict) -> str:
    """One line of CLIENT LIST as the error shows it (lib-name and lib-ver exist from Redis 7.2)."""
    lib = f" lib={c['lib-name']} {c.get('lib-ver', '')}".rstrip() if c.get("lib-name") else ""
    return (f"addr={c['addr']} name={c.get('name') or '(none)'}{lib} db={c['db']} cmd={c.get('cmd')} "
            f"age={c.get('age')} s idle={c.get('idle')} s")


# pg_stat_activity is read afresh by each statement only outside a transaction: the connection is autocommit.
# Only client backends: an autovacuum worker also shows the database's name.
_BACKENDS = """
SELECT pid, application_name, client_addr, client_port, state,
       extract(epoch FROM now() - backend_start)::int, left(query, 100)
FROM pg_stat_activity
WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> %s
ORDER BY pid
"""


def check_postgres(datname: str, dsn: str = POSTGRES_DSN, grace: float = GRACE, poll: float = POLL) -> None:
    """Raise Foreign naming every backend of database `datname` not the harness's still there after `grace` seconds."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5, application_name=harness_name()) as conn:
        found = _lingering(lambda: conn.execute(_BACKENDS, (datname, harness_name())).fetchall(), grace, poll)
    if not found:
        return
    lines = "\n".join(f"  {describe_postgres(row)}" for row in found)
    raise Foreign(f"bench: {len(found)} connection(s) outside the bench use the PostgreSQL database {datname}; "
                  f"nothing measured:\n{lines}\n"
                  f"bench: such a connection can take the bench's tasks or rows and falsify its figures; stop the "
                  f"process that holds it (or SELECT pg_terminate_backend(<pid>)), then run again")


def describe_postgres(row: tuple) -> str:
    """One row of _BACKENDS as the error shows it."""
    pid, app, addr, port, state, age, query = row
    where = f"{addr}:{port}" if addr is not None else "a Unix socket"
    return f"pid={pid} application_name={app or '(none)'} addr={where} state={state} age={age} s last query={query!r}"


def _lingering(look: Callable[[], list[T]], grace: float, poll: float) -> list[T]:
    """What `look` finds once it finds nothing or `grace` seconds passed, looking every `poll` seconds."""
    deadline = time.monotonic() + grace
    while (found := look()) and time.monotonic() < deadline:
        time.sleep(poll)
    return found
