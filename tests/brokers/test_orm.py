"""What the contract does not say about the database broker: rows, SQLite settings, reconnects, load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_q.brokers import orm_sqlite, wakeup
from django_q.brokers.orm import OrmBroker
from django_q.brokers.orm_sqlite import SQLITE_BUSY_TIMEOUT_MS
from django_q.exceptions import BrokerConnectionError
from django_q.models import OrmQ

from .conftest import ALIASES, in_thread

ORM_BACKENDS = [
    pytest.param(alias, id=kind, marks=pytest.mark.django_db(databases=[alias], transaction=True))
    for kind, alias in ALIASES.items()
]


@pytest.fixture(params=ORM_BACKENDS)
def alias(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def broker(alias: str, queue_name: str) -> OrmBroker:
    return OrmBroker(queue_name, 30.0, alias=alias, poll=0.02)


def test_rows_record_lease_and_attempts(broker: OrmBroker, alias: str) -> None:
    package_id = broker.enqueue(b"job", priority=3)
    (delivery,) = broker.dequeue()
    row = OrmQ.objects.using(alias).get(pk=int(package_id))
    assert (row.queue, row.priority, row.leased, row.attempts) == (broker.name, 3, True, 1)
    assert row.visible > time.time() + 25
    broker.requeue([delivery.id])
    row.refresh_from_db()
    assert (row.leased, row.attempts) == (False, 1)
    broker.dequeue()
    broker.ack([delivery.id])
    assert not OrmQ.objects.using(alias).filter(pk=int(package_id)).exists()


def test_enqueued_row_is_the_row_the_model_would_save(broker: OrmBroker, alias: str) -> None:
    """enqueue() writes its INSERT itself, for speed: its row holds what OrmQ(...).save() would store."""
    before = timezone.now()
    ids = [broker.enqueue(b"\x00job", priority=-2, key="k1"), broker.enqueue(b"later", delay=60)]
    after = timezone.now()
    OrmQ(queue=broker.name, payload=b"\x00job", priority=-2, visible=time.time(), key="k1").save(using=alias)
    OrmQ(queue=broker.name, payload=b"later", visible=time.time() + 60).save(using=alias)
    rows = list(OrmQ.objects.using(alias).filter(queue=broker.name).order_by("id"))
    assert [str(row.pk) for row in rows[:2]] == ids

    def stored(row: OrmQ) -> dict:
        values = {f.name: getattr(row, f.attname) for f in OrmQ._meta.concrete_fields}
        return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in values.items()
                if k not in ("id", "created", "visible")}

    for ours, model in zip(rows[:2], rows[2:]):
        assert stored(ours) == stored(model)
        assert before <= ours.created <= after
        assert abs(ours.visible - model.visible) < 5


@pytest.mark.django_db(databases=["default"], transaction=True)
def test_sqlite_connections_wait_for_locks_and_use_wal(queue_name: str) -> None:
    OrmBroker(queue_name, 30.0).ping()
    prepared: list[tuple[int, str]] = []

    def check() -> None:
        try:
            raw = connections["default"]
            raw.ensure_connection()  # a new connection: prepared by the connection_created receiver
            prepared.append(
                (
                    raw.connection.execute("PRAGMA busy_timeout").fetchone()[0],
                    raw.connection.execute("PRAGMA journal_mode").fetchone()[0],
                )
            )
        finally:
            connections.close_all()

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(10)
    assert prepared == [(SQLITE_BUSY_TIMEOUT_MS, "wal")]


def test_django_setup_prepares_sqlite_connections_without_importing_the_broker(tmp_path) -> None:
    """Every process of a project loads the app, most never use the database broker: setup registers the
    SQLite receiver (orm_sqlite) alone, not the broker with its wake-up code (about 35 ms of imports)."""
    script = f"""
import sys, django
from django.conf import settings
django.setup()
from django.db import connections
settings.DATABASES["default"]["NAME"] = {str(tmp_path / "fresh.sqlite3")!r}
raw = connections["default"]
raw.ensure_connection()
pragmas = [raw.connection.execute(f"PRAGMA {{name}}").fetchone()[0] for name in ("busy_timeout", "journal_mode")]
broker = [m for m in ("django_q.brokers.orm", "django_q.brokers.wakeup", "django_q.brokers.inotify") if m in sys.modules]
print(*pragmas, *broker)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(SQLITE_BUSY_TIMEOUT_MS), "wal"]


@pytest.mark.parametrize("alias", [p for p in ORM_BACKENDS if p.values[0] != "default"])
def test_broken_connection_raises_then_reconnects(broker: OrmBroker, alias: str) -> None:
    broker.ping()
    connections[alias].connection.close()  # behind Django's back, as a server restart would
    with pytest.raises(BrokerConnectionError):
        broker.size()
    broker.enqueue(b"after")
    assert [d.payload for d in broker.dequeue()] == [b"after"]
    broker.purge()


def test_producers_and_consumers_under_load(broker: OrmBroker, alias: str) -> None:
    """Three producers and three consumers at once: no lock errors, every package exactly once."""
    expected = sorted(b"%d-%d" % (p, i) for p in range(3) for i in range(60))
    produced = threading.Event()
    deadline = time.monotonic() + 60

    def produce(p: int) -> None:
        mine = OrmBroker(broker.name, 30.0, alias=alias)
        for i in range(60):
            mine.enqueue(b"%d-%d" % (p, i))

    def consume() -> list[bytes]:
        mine = OrmBroker(broker.name, 30.0, alias=alias, poll=0.01)
        got: list[bytes] = []
        while time.monotonic() < deadline:
            deliveries = mine.dequeue(count=4, timeout=0.5)
            if not deliveries and produced.is_set():
                break
            got.extend(d.payload for d in deliveries)
            mine.ack([d.id for d in deliveries])
        return got

    with ThreadPoolExecutor(6) as pool:
        consumers = [pool.submit(in_thread, consume) for _ in range(3)]
        for producer in [pool.submit(in_thread, produce, p) for p in range(3)]:
            producer.result(timeout=60)
        produced.set()
        got = [payload for future in consumers for payload in future.result(timeout=60)]
    assert sorted(got) == expected
    assert (broker.size(), broker.leased()) == (0, 0)


WAKING = [p for p in ORM_BACKENDS if p.values[0] != "mysql"]


def woken_dequeue(waiting: OrmBroker, sender: OrmBroker, payload: bytes) -> tuple[list[bytes], float]:
    """An idle dequeue of `waiting` (in a thread; timeout 20 s), and half a second into its wait an enqueue of
    `payload` by `sender`: the payloads it got, and the seconds it took."""

    def dequeue() -> tuple[list[bytes], float]:
        start = time.monotonic()
        deliveries = waiting.dequeue(timeout=20.0)
        return [d.payload for d in deliveries], time.monotonic() - start

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(in_thread, dequeue)
        time.sleep(0.5)  # the first claim found nothing; the thread waits
        sender.enqueue(payload)
        return future.result(timeout=25)


@pytest.mark.parametrize("alias", WAKING)
def test_idle_dequeue_wakes_on_enqueue_long_before_its_poll(alias: str, queue_name: str) -> None:
    """With poll=30 only the wake-up (NOTIFY, SQLite's data_version) can hand the package out within seconds."""
    waiting = OrmBroker(queue_name, 30.0, alias=alias, poll=30.0)
    try:
        payloads, took = woken_dequeue(waiting, OrmBroker(queue_name, 30.0, alias=alias), b"wake")
    finally:
        waiting.close()
    assert payloads == [b"wake"]
    assert took < 5.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
@pytest.mark.django_db(databases=["default"], transaction=True)
def test_idle_sqlite_wait_sleeps_until_the_file_is_written(queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Linux an idle dequeue on a SQLite file reads PRAGMA data_version when inotify reports a write, not
    every SQLITE_CHECK seconds; an enqueue from another connection still wakes it."""
    reads = []
    real = wakeup._data_version

    def counted(raw: object) -> int | None:
        reads.append(time.monotonic())
        return real(raw)

    monkeypatch.setattr(wakeup, "_data_version", counted)
    waiting = OrmBroker(queue_name, 30.0, poll=30.0)
    try:
        assert waiting.dequeue(timeout=0.5) == []
        assert len(reads) <= 3  # polling read it about 50 times
        payloads, took = woken_dequeue(waiting, OrmBroker(queue_name, 30.0), b"wake")
    finally:
        waiting.close()
    assert payloads == [b"wake"]
    assert took < 5.0


@pytest.mark.parametrize("alias", WAKING)
def test_delayed_rows_come_with_the_poll_and_rolled_back_ones_never(alias: str, queue_name: str) -> None:
    """No wake-up for a row that is not ready: the waiting dequeue still claims every `poll` seconds."""
    waiting = OrmBroker(queue_name, 30.0, alias=alias, poll=0.3)
    try:
        waiting.enqueue(b"later", delay=0.5)
        with pytest.raises(RuntimeError), transaction.atomic(using=alias):
            OrmBroker(queue_name, 30.0, alias=alias).enqueue(b"gone")
            raise RuntimeError
        assert [d.payload for d in waiting.dequeue(timeout=10.0)] == [b"later"]
        assert waiting.dequeue(timeout=0.5) == []
    finally:
        waiting.close()


@pytest.mark.django_db(databases=["pg"], transaction=True)
def test_pg_enqueue_and_claim_are_one_statement_each_and_only_a_claim_of_its_own_skips_the_flush(
    queue_name: str,
) -> None:
    """On PostgreSQL an enqueue is one statement (its INSERT and its NOTIFY); a claim is one statement whose
    commit does not wait for the disk, a setting that ends with it; inside the caller's transaction a claim
    leaves that transaction's setting alone."""
    conn = connections["pg"]
    broker = OrmBroker(queue_name, 30.0, alias="pg")

    def setting() -> str:
        with conn.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    try:
        with CaptureQueriesContext(conn) as enqueued:
            broker.enqueue(b"first")
        with CaptureQueriesContext(conn) as claimed:
            assert [d.payload for d in broker.dequeue()] == [b"first"]
        assert len(enqueued) == 1 and "pg_notify" in enqueued[0]["sql"]
        assert "synchronous_commit" not in enqueued[0]["sql"]
        assert len(claimed) == 1 and "synchronous_commit" in claimed[0]["sql"]
        assert setting() == "on"
        broker.enqueue(b"second")
        with transaction.atomic(using="pg"):
            with CaptureQueriesContext(conn) as claimed:
                assert [d.payload for d in broker.dequeue()] == [b"second"]
            assert setting() == "on"
        assert "synchronous_commit" not in claimed[0]["sql"]
    finally:
        broker.purge()


@pytest.mark.django_db(databases=["default"], transaction=True)
def test_sqlite_claim_of_its_own_commits_without_fsync_and_restores_the_setting(queue_name: str) -> None:
    """In WAL mode a claim outside a transaction runs at synchronous = NORMAL, and the connection's own setting
    is back afterwards; inside the caller's transaction nothing is changed."""
    conn = connections["default"]
    broker = OrmBroker(queue_name, 30.0)

    def setting() -> int:
        with conn.cursor() as cursor:
            cursor.execute("PRAGMA synchronous")
            return cursor.fetchone()[0]

    try:
        broker.enqueue(b"first")
        before = setting()
        assert before > orm_sqlite.SQLITE_NORMAL  # SQLite's default, FULL
        with CaptureQueriesContext(conn) as claimed:
            assert [d.payload for d in broker.dequeue()] == [b"first"]
        sqls = [q["sql"] for q in claimed]
        claim = next(i for i, sql in enumerate(sqls) if sql.startswith("UPDATE"))
        assert f"PRAGMA synchronous = {orm_sqlite.SQLITE_NORMAL}" in sqls[:claim]
        assert f"PRAGMA synchronous = {before}" in sqls[claim:]
        assert setting() == before
        broker.enqueue(b"second")
        with transaction.atomic(), CaptureQueriesContext(conn) as claimed:
            assert [d.payload for d in broker.dequeue()] == [b"second"]
        assert not [q for q in claimed if "synchronous" in q["sql"]]
    finally:
        broker.purge()


@pytest.mark.django_db(databases=["pg"], transaction=True)
def test_listen_failure_falls_back_to_polling_and_logs_once(
    queue_name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broker = OrmBroker(queue_name, 30.0, alias="pg", poll=0.05)
    broker.ping()  # the broker's own connection is open before connecting fails

    def refuse(*args: object, **kwargs: object) -> None:
        raise connections["pg"].Database.OperationalError("refused")

    monkeypatch.setattr(wakeup, "_warned", set())
    monkeypatch.setattr(connections["pg"].Database, "connect", refuse)
    try:
        assert broker.dequeue(timeout=0.2) == []
        broker.enqueue(b"polled")
        assert [d.payload for d in broker.dequeue(timeout=5.0)] == [b"polled"]
    finally:
        broker.purge()
        broker.close()
    assert [r.getMessage() for r in caplog.records if "LISTEN failed" in r.getMessage()] == [
        "database 'pg': LISTEN failed, the broker polls instead: refused"
    ]


@pytest.mark.django_db(databases=["pg"], transaction=True)
def test_close_ends_the_listen_connection(queue_name: str) -> None:
    def listeners() -> int:
        with connections["pg"].cursor() as cursor:
            listen = f'LISTEN "{wakeup.channel(queue_name)}"'
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s", [listen])
            return cursor.fetchone()[0]

    broker = OrmBroker(queue_name, 30.0, alias="pg", poll=0.05)
    assert broker.dequeue(timeout=0.1) == []
    assert listeners() == 1
    broker.close()
    deadline = time.monotonic() + 5
    while listeners() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listeners() == 0


# Run in a child process: Django picks psycopg 3 whenever it imports, so only a
# process where it does not sees the psycopg2 branches of wakeup (_drain, _wait_one).
PSYCOPG2_WAKEUP = """
import json, os, sys
sys.modules["psycopg"] = None  # Django's PostgreSQL backend falls back to psycopg2
import django
from django.conf import settings
settings.DATABASES["pg"]["NAME"] = os.environ["DQ_PG_NAME"]
django.setup()
from django.db import connections
from django_q.brokers.orm import OrmBroker
from tests.brokers.test_orm import woken_dequeue

queue = os.environ["DQ_QUEUE"]
waiting = OrmBroker(queue, 30.0, alias="pg", poll=30.0)
# The second claim drains the LISTEN connection first.
rounds = [woken_dequeue(waiting, OrmBroker(queue, 30.0, alias="pg"), p) for p in (b"first", b"second")]
waiting.close()
report = {"driver": connections["pg"].Database.__name__,
          "rounds": [([p.decode() for p in payloads], took) for payloads, took in rounds]}
print(json.dumps(report))
"""


@pytest.mark.django_db(databases=["pg"], transaction=True)
def test_idle_dequeue_wakes_on_enqueue_with_psycopg2_too(queue_name: str) -> None:
    """Django on psycopg2 (no psycopg 3 importable): the NOTIFY wake-up works the same, twice in a row."""
    import psycopg2  # noqa: F401  (a test dependency: missing, this test fails rather than skips)

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DQ_PG_NAME": connections["pg"].settings_dict["NAME"],
        "DQ_QUEUE": queue_name,
    }
    try:
        done = subprocess.run([sys.executable, "-c", PSYCOPG2_WAKEUP], env=env, capture_output=True, text=True,
                              timeout=90)
    finally:
        OrmBroker(queue_name, 30.0, alias="pg").purge()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["driver"] == "psycopg2"
    assert [payloads for payloads, _ in report["rounds"]] == [["first"], ["second"]]
    assert all(took < 5.0 for _, took in report["rounds"]), report["rounds"]
