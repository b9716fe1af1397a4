"""django_q.history: a saver's per-minute history, written to the broker and read back merged."""

from __future__ import annotations

import pytest

from django_q.brokers.memory import MemoryBroker, reset
from django_q.history import BUCKETS, FLUSH, OTHER, HistoryWriter, Minute, bucket, quantile, window
from django_q.outcomes import Outcome
from django_q.package import TaskPackage

QUEUE = "history-test"
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a minute


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh():
    reset()
    yield
    reset()


def outcome(func: str, started: float, run: float, success: bool = True, wait: float = 0.0,
            attempts: int = 1, **extra) -> Outcome:
    task = TaskPackage(id="t", name="n", func=func, enqueued=started - wait)
    return Outcome("d", task, success, None, started, started + run, attempts, QUEUE, **extra)


def test_counts_and_times_add_up_per_minute_and_function():
    clock = Clock(T0 + 50)
    broker = MemoryBroker(QUEUE, 30, clock=clock)
    writer = HistoryWriter(broker, "w1", clock)
    writer.add([outcome("app.fast", T0 + 1, 0.003, wait=0.02) for _ in range(8)])
    writer.add([outcome("app.bad", T0 + 2, 0.003, success=False) for _ in range(2)])
    writer.add([outcome("app.bad", T0 + 3, 0.003, success=False, retry_payload=b"x", attempts=2)])
    writer.add([outcome("app.slow", T0 + 59.9, 0.3)])  # starts in this minute, stops in the next
    writer.add([outcome("app.fast", T0 + 4, 0.003, success=False, cancelled=True)])
    for _ in range(3):
        broker.enqueue(b"waiting")
    assert writer.flush()
    data = window(QUEUE, minutes=3, now=T0 + 61, broker=broker)
    assert data["minutes"] == [T0 - 60, T0, T0 + 60]
    totals = data["totals"]
    assert (totals["started"], totals["succeeded"], totals["failed"], totals["retried"], totals["cancelled"]) == \
        (13, 9, 2, 1, 1)
    assert data["depth"][-2:] == [3, None]
    # A full minute's counts are per second over 60 s; the minute under way over its seconds so far (1 s).
    assert data["started"][-2:] == [round(13 / 60, 3), 0.0]
    assert data["succeeded"][-2:] == [round(8 / 60, 3), 1.0]
    funcs = {f["func"]: f for f in data["functions"]}
    assert [f["func"] for f in data["functions"]] == ["app.fast", "app.bad", "app.slow"]
    assert (funcs["app.fast"]["runs"], funcs["app.fast"]["failed"]) == (9, 0)  # a cancel is no failure
    assert (funcs["app.bad"]["runs"], funcs["app.bad"]["failed"], funcs["app.bad"]["failure_rate"]) == (3, 3, 1.0)
    assert 0.25 < funcs["app.slow"]["p50"] <= 0.5 and 0.0025 < funcs["app.fast"]["p95"] <= 0.005
    # Waiting time of first attempts only: eight of 0.02 s, three of 0.
    assert 0.01 < data["wait_p95"][-2] <= 0.025


def test_several_writers_add_up():
    clock = Clock(T0 + 10)
    broker = MemoryBroker(QUEUE, 30, clock=clock)
    writers = [HistoryWriter(broker, f"w{i}", clock) for i in range(3)]
    for n, writer in enumerate(writers, 1):
        writer.add([outcome("app.f", T0 + 1, 0.01) for _ in range(n)])
        writer.flush()
    writers[0].add([outcome("app.f", T0 + 2, 0.01, success=False)])
    writers[0].flush(force=True)  # replaces its own record, keeping what it wrote before
    data = window(QUEUE, minutes=1, now=T0 + 10, broker=broker)
    assert (data["totals"]["succeeded"], data["totals"]["failed"], data["functions"][0]["runs"]) == (6, 1, 7)


def test_flush_waits_for_its_period_and_keeps_minutes_a_broker_refused():
    clock = Clock(T0 + 1)
    broker = MemoryBroker(QUEUE, 30, clock=clock)
    writer = HistoryWriter(broker, "w", clock)
    writer.add([outcome("app.f", T0, 0.01)])
    assert writer.flush()
    writer.add([outcome("app.f", T0, 0.01)])
    assert not writer.flush()
    assert window(QUEUE, minutes=1, now=clock(), broker=broker)["totals"]["succeeded"] == 1
    clock.now += FLUSH
    assert writer.flush()
    assert window(QUEUE, minutes=1, now=clock(), broker=broker)["totals"]["succeeded"] == 2


def test_an_hour_is_kept_and_old_minutes_leave_the_writer():
    clock = Clock(T0)
    broker = MemoryBroker(QUEUE, 30, clock=clock)
    writer = HistoryWriter(broker, "w", clock)
    writer.add([outcome("app.f", T0, 0.01)])
    writer.flush()
    clock.now += 30 * 60
    writer.flush(force=True)
    assert sorted(writer.minutes) == [int(T0 // 60), int(clock.now // 60)]
    assert window(QUEUE, now=clock(), broker=broker)["totals"]["started"] == 1
    clock.now += 31 * 60
    writer.flush(force=True)
    assert sorted(writer.minutes) == [int(clock.now // 60) - 31, int(clock.now // 60)]
    data = window(QUEUE, now=clock(), broker=broker)
    assert data["totals"]["started"] == 0 and len(data["minutes"]) == 60
    writer.add([outcome("app.f", T0, 0.01)])  # a run of more than an hour ago: nowhere to count it
    assert window(QUEUE, now=clock(), broker=broker)["totals"]["started"] == 0


def test_a_long_task_adds_its_start_to_the_minute_written_before():
    clock = Clock(T0 + 5)
    broker = MemoryBroker(QUEUE, 30, clock=clock)
    writer = HistoryWriter(broker, "w", clock)
    writer.add([outcome("app.quick", T0 + 1, 0.01) for _ in range(3)])
    writer.flush()
    clock.now += 20 * 60
    writer.add([outcome("app.long", T0 + 2, 20 * 60)])  # started in the first minute, stopped now
    writer.flush()
    data = window(QUEUE, minutes=30, now=clock(), broker=broker)
    first = data["minutes"].index(T0)
    assert data["started"][first] == round(4 / 60, 3)  # 3 + 1, not the 1 alone
    assert data["totals"]["succeeded"] == 4


def test_functions_past_the_limit_count_as_other(monkeypatch):
    monkeypatch.setattr("django_q.history.FUNCS_MAX", 2)
    clock = Clock(T0)
    broker = MemoryBroker(QUEUE, 30, clock=clock)
    writer = HistoryWriter(broker, "w", clock)
    writer.add([outcome(f"app.f{i}", T0, 0.01) for i in range(4)])
    writer.flush()
    assert {f["func"]: f["runs"] for f in window(QUEUE, minutes=1, now=T0, broker=broker)["functions"]} == \
        {"app.f0": 1, "app.f1": 1, OTHER: 2}


def test_quantile_interpolates_within_a_bucket():
    counts = [0] * (len(BUCKETS) + 1)
    assert quantile(0.5, counts) is None
    counts[bucket(0.3)] = 10  # (0.25, 0.5]
    assert quantile(0.5, counts) == pytest.approx(0.375)
    counts[-1] = 90  # past the last bound
    assert quantile(0.95, counts) == BUCKETS[-1]
    assert bucket(0.0) == 0 and bucket(BUCKETS[-1] + 1) == len(BUCKETS)


def test_a_record_round_trips_and_ignores_unknown_keys():
    minute = Minute(started=2, funcs={"f": [1, 0] + [0] * (len(BUCKETS) + 1)})
    assert Minute.from_json(minute.to_json()) == minute
    assert Minute.from_json(b'{"started": 3, "later": 1}').started == 3


@pytest.mark.django_db(transaction=True)
def test_a_saver_serving_several_queues_counts_each_outcome_in_its_own_queues_history():
    from django_q.brokers import get_broker
    from django_q.cluster.saving import Saver
    from django_q.conf import Config

    config = Config(name="hq-high", queues=("hq-high", "hq-low"))
    saver = Saver(config, answer=lambda saved: None)
    now = saver._histories()["hq-high"].clock()
    high = outcome("math.floor", now, 0.1)._replace(delivery_id="hq-high:1")
    low = outcome("math.ceil", now, 0.1)._replace(delivery_id="hq-low:2")
    saver._add_history([high, low, low])
    saver.write_history(force=True)

    def functions(queue: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, data in get_broker(queue, config).read_history(int(now // 60) - 1):
            for func, row in Minute.from_json(data).funcs.items():
                counts[func] = counts.get(func, 0) + row[0]
        return counts

    assert functions("hq-high") == {"math.floor": 1}
    assert functions("hq-low") == {"math.ceil": 2}
