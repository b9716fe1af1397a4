"""The bench harness (bench/): its run lock, its guard against foreign clients and the issue #21 targets table.

No bench runs here. The guard's tests use the real Redis (db 8 and 9, never
the bench's 12 and 15) and PostgreSQL (a database of their own).
"""

import fcntl
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # appended: the bench's module names (lock, targets ...) shadow nothing

import guard  # noqa: E402
import lock  # noqa: E402
import targets  # noqa: E402
from report import Results  # noqa: E402
from systems import Target  # noqa: E402
from workloads import Runner  # noqa: E402


@pytest.fixture
def holder(tmp_path):
    """A process that holds the bench lock on a file of its own until it is killed."""
    path = tmp_path / "bench.lock"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.append({str(BENCH)!r})
        import lock
        lock.acquire(__import__("pathlib").Path({str(path)!r}))
        print("held", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield path, proc
    finally:
        proc.kill()
        proc.wait(10)


def test_a_second_run_stops_naming_the_run_that_holds_the_lock(holder):
    path, proc = holder
    with pytest.raises(lock.Busy) as err:
        lock.acquire(path)
    assert f"pid {proc.pid}," in str(err.value)
    assert str(path) in str(err.value)


def test_the_lock_is_free_again_once_its_run_ended(holder):
    path, proc = holder
    proc.kill()
    proc.wait(10)
    fd = lock.acquire(path)
    assert path.read_text().startswith(f"pid {__import__('os').getpid()},")
    __import__("os").close(fd)


WATCHED, OTHER = 9, 8  # the Redis databases of the guard's tests
REDIS_URL = "redis://127.0.0.1:6379/{}"
# db 8 and 9 are shared by the xdist workers, both interpreters' lanes and other checkouts: their tests take turns.
REDIS_TURN = Path(tempfile.gettempdir()) / "django_q_tests_bench_guard.lock"

# A process outside the bench: holds one connection (named argv[3]) until its stdin closes, then lingers
# argv[4] seconds and exits without closing it, as a killed worker's socket is closed by the kernel.
STRAY = textwrap.dedent("""
    import sys, time
    kind, where, name, linger = sys.argv[1:]
    if kind == "redis":
        import redis
        conn = redis.Redis.from_url(where, client_name=name)
        print(conn.client_info()["addr"], flush=True)
    else:
        import psycopg
        conn = psycopg.connect(where, application_name=name)
        print(conn.info.backend_pid, flush=True)
    sys.stdin.read()
    time.sleep(float(linger))
""")


@pytest.fixture
def harness():
    """A harness connection to db 9 (named as the bench names its own), with db 8 and 9 to this test alone.

    Waits (up to 60 s) for its turn, then up to 10 s for clients other tests left to go.
    """
    fd = os.open(REDIS_TURN, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{REDIS_TURN} stayed locked 60 s: another test run holds Redis db 8 and 9")
                time.sleep(0.05)
        client = guard.redis_client(REDIS_URL.format(WATCHED))
        try:
            try:
                guard.check_redis(client, {WATCHED, OTHER}, grace=10)
            except guard.Foreign as exc:
                pytest.fail(f"Redis db 8 or 9 is used outside these tests:\n{exc}")
            yield client
        finally:
            client.close()
    finally:
        os.close(fd)


@pytest.fixture
def strays():
    """start(kind, where, linger=0.0) -> (process, name, its address or backend pid); every one killed at the end."""
    started: list[subprocess.Popen] = []

    def start(kind: str, where: str, linger: float = 0.0) -> tuple[subprocess.Popen, str, str]:
        name = f"stray-{uuid.uuid4().hex[:8]}"
        proc = subprocess.Popen([sys.executable, "-c", STRAY, kind, where, name, str(linger)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        ident = proc.stdout.readline().strip()
        assert ident, f"the stray {kind} client did not connect (exit {proc.poll()})"
        return proc, name, ident

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)
            proc.stdin.close()
            proc.stdout.close()


@pytest.fixture
def pg_database():
    """A PostgreSQL database of this test's own, dropped (its connections with it) at the end."""
    name = f"dq_test_guard_{os.getpid()}"
    with psycopg.connect(guard.POSTGRES_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(guard.POSTGRES_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_foreign_redis_client_stops_the_run_naming_it(harness, strays):
    _, name, addr = strays("redis", REDIS_URL.format(WATCHED))
    with pytest.raises(guard.Foreign) as err:
        guard.check_redis(harness, {WATCHED}, grace=0.2)
    message = str(err.value)
    assert f"addr={addr} name={name}" in message
    assert f"db={WATCHED} cmd=client|info age=" in message  # after lib=redis-py <version> from Redis 7.2
    assert "1 client(s) outside the bench use Redis db 9 on 127.0.0.1:6379" in message
    assert "stop the process that holds it" in message


def test_a_redis_client_that_closes_within_the_grace_period_does_not_stop_the_run(harness, strays):
    proc, name, _ = strays("redis", REDIS_URL.format(WATCHED), linger=0.3)
    with pytest.raises(guard.Foreign, match=name):  # seen while it is connected
        guard.check_redis(harness, {WATCHED}, grace=0)
    proc.stdin.close()  # it exits 0.3 s later, its socket closed by the kernel: a worker of the run before
    guard.check_redis(harness, {WATCHED}, grace=10)


def test_the_harness_own_redis_clients_are_not_counted(harness, strays):
    counter = guard.redis_client(REDIS_URL.format(WATCHED))  # a second one, as the Runner's counter
    try:
        counter.ping()
        _, name, _ = strays("redis", REDIS_URL.format(WATCHED))
        with pytest.raises(guard.Foreign) as err:
            guard.check_redis(harness, {WATCHED}, grace=0.2)
        assert "1 client(s) outside the bench" in str(err.value) and name in str(err.value)
        assert guard.harness_name() not in str(err.value)
    finally:
        counter.close()


def test_redis_clients_of_other_databases_are_ignored(harness, strays):
    _, elsewhere, _ = strays("redis", REDIS_URL.format(OTHER))
    _, watched, _ = strays("redis", REDIS_URL.format(WATCHED))
    with pytest.raises(guard.Foreign) as err:
        guard.check_redis(harness, {WATCHED}, grace=0.2)
    assert "1 client(s) outside the bench" in str(err.value) and watched in str(err.value)
    assert elsewhere not in str(err.value)


def test_a_run_stops_and_flushes_nothing_while_a_foreign_client_is_connected(harness, strays, tmp_path):
    runner = Runner(tmp_path)
    runner.broker.close()
    runner.counter.close()
    runner.broker, runner.counter = harness, guard.redis_client(REDIS_URL.format(OTHER))  # not the bench's 12 and 15
    runner.dbs = {WATCHED, OTHER}
    try:
        harness.set("bench:done", 7)
        _, name, _ = strays("redis", REDIS_URL.format(OTHER))
        with pytest.raises(guard.Foreign, match=name):
            runner.prepare(Target("huey"))  # a Redis peer: nothing to migrate
        assert harness.get("bench:done") == b"7"
        runner.flush()  # as the session ends (run.py, far.py): still another process's data
        assert harness.get("bench:done") == b"7"
    finally:
        harness.delete("bench:done")
        runner.counter.close()


def test_a_foreign_postgres_connection_stops_the_run_naming_it_and_the_harness_own_is_not_counted(pg_database, strays):
    dsn = f"host=127.0.0.1 user=postgres dbname={pg_database}"
    with psycopg.connect(dsn, application_name=guard.harness_name()):  # as the Runner's stored_results
        _, name, pid = strays("postgres", dsn)
        with pytest.raises(guard.Foreign) as err:
            guard.check_postgres(pg_database, grace=0.2)
    message = str(err.value)
    assert f"1 connection(s) outside the bench use the PostgreSQL database {pg_database}" in message
    assert f"pid={pid} application_name={name} addr=127.0.0.1:" in message
    assert guard.harness_name() not in message


def test_a_postgres_connection_that_closes_within_the_grace_period_does_not_stop_the_run(pg_database, strays):
    proc, name, _ = strays("postgres", f"host=127.0.0.1 user=postgres dbname={pg_database}", linger=0.3)
    with pytest.raises(guard.Foreign, match=name):  # seen while it is connected
        guard.check_postgres(pg_database, grace=0)
    proc.stdin.close()
    guard.check_postgres(pg_database, grace=10)


def summary_of(values: dict[str, dict[str, list[float]]]) -> dict:
    results = Results()
    for key, rows in values.items():
        for label, runs in rows.items():
            for v in runs:
                results.add(key, label, "django-q redis/sqlite", v)
    return results.summary()


def rows_by_name(summary: dict) -> dict[str, dict]:
    return {r["target"]: r for r in targets.evaluate(summary)}


def test_w2_redis_is_met_against_the_best_peer_only_from_one_and_a_half_times_its_median():
    summary = summary_of({
        "W2@5000": {"django-q redis/sqlite": [1400, 1500, 1600], "huey redis": [900, 1000, 1100],
                    "dramatiq redis": [500, 600, 700], "django-q@abc1234 redis/sqlite": [9000]},
        "W2@10000": {"django-q redis/sqlite": [1400, 1490, 1600], "huey redis": [900, 1000, 1100]},
    })
    rows = rows_by_name(summary)
    assert rows["W2 Redis, N=5,000: >= 1.5x the best peer"]["met"] is True  # 1500 against 1.5 x 1000
    assert "huey redis" in rows["W2 Redis, N=5,000: >= 1.5x the best peer"]["against"]  # a baseline is no peer
    assert rows["W2 Redis, N=10,000: >= 1.5x the best peer"]["met"] is False  # 1490 < 1500


def test_latency_targets_are_met_at_or_below_their_bound_and_a_missing_peer_is_not_measured():
    summary = summary_of({
        "W3-p50": {"django-q redis/sqlite": [1.3], "huey redis": [1.3],
                   "django-q orm/pg": [3.0], "procrastinate pg": [14.0]},
        "W3-p99": {"django-q redis/sqlite": [5.1]},
    })
    rows = rows_by_name(summary)
    assert rows["W3 p50 <= Huey's (ms)"]["met"] is True
    assert rows["W3 p99 <= 5 ms"]["met"] is False
    assert rows["database broker W3 p50 on PostgreSQL: <= 1/5 of procrastinate's (ms)"]["met"] is False  # 3 > 2.8
    assert rows["database broker W3 p50 on PostgreSQL: <= 1/5 of django-tasks-db's (ms)"]["met"] is None
    assert rows["W1 single calls >= Huey"]["met"] is None


def test_w2_at_each_n_is_a_figure_of_its_own_in_ascending_order():
    summary = summary_of({"W2@10000": {"django-q redis/sqlite": [2.0]}, "W2@5000": {"django-q redis/sqlite": [1.0]},
                          "W1": {"django-q redis/sqlite": [3.0]}})
    assert list(summary) == ["W1", "W2@5000", "W2@10000"]
    assert summary["W2@5000"]["title"] == "W2 drain, Redis broker, N=5,000"


def test_a_peer_median_from_a_run_cut_short_is_marked_in_the_targets_table():
    results = Results()
    results.add("W2-orm@1000", "django-q orm/pg", "django-q orm/pg", 1200.0)
    results.add("W2-orm@1000", "procrastinate pg", "django-q orm/pg", 96.0, "386 of 600 tasks in 4.0 s")
    rows = rows_by_name(results.summary())
    assert rows["database broker W2 on PostgreSQL, N=1,000: >= 5x procrastinate"]["against"] == "5 x 96*"
    assert rows["database broker W2 on PostgreSQL, N=1,000: >= 5x procrastinate"]["met"] is True


def test_w5_recovery_is_a_column_of_the_overview_and_never_where_a_task_was_lost():
    results = Results()
    for label, w2, lost, recovery in (("django-q redis/sqlite", 2000.0, 0, 5.4), ("huey redis", 1500.0, 20, float("nan"))):
        results.add("W2@5000", label, "django-q redis/sqlite", w2)
        results.add("W5-lost", label, "django-q redis/sqlite", lost)
        results.add("W5-recovery", label, "django-q redis/sqlite", recovery)
    header, ours, huey = results.overview().splitlines()[:3]
    assert header.split()[-3:] == ["W5", "recovery", "s"]
    assert ours.split()[-1] == "5.40" and huey.split()[-1] == "never"


def test_a_recovery_that_never_came_has_no_ratio_to_ours():
    results = Results()
    results.add("W5-recovery", "django-q redis/sqlite", "django-q redis/sqlite", 5.0)
    results.add("W5-recovery", "huey redis", "django-q redis/sqlite", float("nan"))
    results.add("W5-recovery", "celery redis", "django-q redis/sqlite", 5.5)
    targets_ = results.summary()["W5-recovery"]["targets"]
    assert targets_["huey redis"]["ratio_to_ours"] is None and targets_["celery redis"]["ratio_to_ours"] == 1.1
