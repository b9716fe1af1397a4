"""The bench harness (bench/): its run lock and the issue #21 targets table, without running a bench."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # appended: the bench's module names (lock, targets ...) shadow nothing

import lock  # noqa: E402
import targets  # noqa: E402
from report import Results  # noqa: E402


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
