"""Rate limits: the setting's syntax, the sliding log, and the fetcher deferring what is over a limit."""

from __future__ import annotations

import time
from multiprocessing import Pipe

import pytest

from django_q.brokers.base import DELAYED, QUEUED
from django_q.brokers.memory import MemoryBroker
from django_q.cluster.channels import state_path
from django_q.cluster.messages import Job, Late, Outcome, unbatch
from django_q.cluster.runstate import RunState
from django_q.cluster.worker import Worker
from django_q.conf import Config
from django_q.conf import get_config
from django_q.exceptions import ConfigurationError
from django_q.package import TaskPackage, pack
from django_q.rates import keys_of, parse_limits, take

from .pusher_rig import LEASE, QUEUE, Rig


@pytest.fixture(autouse=True)
def _empty_memory_broker():
    from django_q.brokers import memory

    memory.reset()
    yield
    memory.reset()


# --- the setting ---


def test_limits_parse_with_their_period_in_seconds(q_cluster) -> None:
    q_cluster(rate_limits={"app.tasks.send_mail": "100/m", "group:reports": " 5 / h ", "app.ping": "20/s"})
    limits = get_config().rate_limits
    assert {k: (v.count, v.period) for k, v in limits.items()} == {
        "app.tasks.send_mail": (100, 60.0), "group:reports": (5, 3600.0), "app.ping": (20, 1.0),
    }
    assert str(limits["group:reports"]) == "5 / h"


@pytest.mark.parametrize("value", ["0/s", "-1/s", "1.5/s", "10/d", "10", "10/", "/s", "ten/s", 10, None, "10/2s"])
def test_a_bad_value_is_a_configuration_error_naming_the_key_and_the_value(q_cluster, value) -> None:
    q_cluster(rate_limits={"app.tasks.send_mail": value})
    with pytest.raises(ConfigurationError) as raised:
        get_config()
    assert "Q_CLUSTER['rate_limits']['app.tasks.send_mail']" in str(raised.value)
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize("key", ["send_mail", "group:", "app..x", "app.tasks.", 3, "app.tasks.send-mail"])
def test_a_bad_key_is_a_configuration_error_naming_it(q_cluster, key) -> None:
    q_cluster(rate_limits={key: "1/s"})
    with pytest.raises(ConfigurationError, match=f"the key {key!r}"):
        get_config()


def test_rate_limits_must_be_a_dict(q_cluster) -> None:
    q_cluster(rate_limits=["app.tasks.send_mail", "1/s"])
    with pytest.raises(ConfigurationError, match=r"Q_CLUSTER\['rate_limits'\] must be a dict"):
        get_config()


def test_a_task_counts_against_its_function_and_its_group() -> None:
    limits = parse_limits({"app.send": "1/s", "group:mail": "1/s", "app.other": "1/s"})
    assert keys_of("app.send", "mail", limits) == ("app.send", "group:mail")
    assert keys_of("app.send", None, limits) == ("app.send",)
    assert keys_of("app.free", "mail", limits) == ("group:mail",)
    assert keys_of("app.free", "news", limits) == ()


# --- the sliding log ---

LIMITS = parse_limits({"f.a": "3/s", "group:g": "2/s"})
WINDOW = LIMITS["f.a"].window  # 1.1 s: the period and its margin


def test_no_more_than_count_starts_in_any_window_not_only_in_calendar_seconds() -> None:
    logs: dict[str, list[float]] = {}
    # Three late in one second: a calendar-second counter would allow three more just after it.
    assert take(logs, [("f.a",)] * 3, LIMITS, 100.9) == [0.0, 0.0, 0.0]
    (wait,) = take(logs, [("f.a",)], LIMITS, 101.1)
    assert wait == pytest.approx(100.9 + WINDOW - 101.1)
    assert take(logs, [("f.a",)], LIMITS, 100.9 + WINDOW + 0.001) == [0.0]


def test_the_wait_is_until_the_oldest_of_the_last_count_starts_leaves_the_window() -> None:
    logs: dict[str, list[float]] = {}
    for at in (10.0, 10.2, 10.4):
        assert take(logs, [("f.a",)], LIMITS, at) == [0.0]
    assert take(logs, [("f.a",)], LIMITS, 10.5) == [pytest.approx(10.0 + WINDOW - 10.5)]
    assert take(logs, [("f.a",)], LIMITS, 11.15) == [0.0]  # 10.0 has left the window
    assert take(logs, [("f.a",)], LIMITS, 11.2) == [pytest.approx(10.2 + WINDOW - 11.2)]
    assert logs["f.a"] == [10.2, 10.4, 11.15]  # only the last count starts are kept


def test_a_start_under_two_keys_waits_for_the_fuller_one() -> None:
    logs: dict[str, list[float]] = {}
    assert take(logs, [("f.a", "group:g"), ("group:g",)], LIMITS, 5.0) == [0.0, 0.0]
    assert take(logs, [("f.a", "group:g"), ("f.a",)], LIMITS, 5.5) == [pytest.approx(5.0 + WINDOW - 5.5), 0.0]
    assert logs == {"f.a": [5.0, 5.5], "group:g": [5.0, 5.0]}


# --- the fetcher ---


def _package(func: str, group: str | None = None, n: int = 0) -> bytes:
    return pack(TaskPackage(id=f"{n:032x}", name=f"t{n}", func=func, group=group))


def _rig(tmp_path, workers: int = 4, **limits) -> Rig:
    """A pusher with `workers` free workers, whose fetcher applies `limits`."""
    rig = Rig(str(tmp_path), rate_limits=parse_limits(limits), max_attempts=1)
    for _ in range(workers):
        rig.worker()
    rig.step()
    rig.pusher.fetcher.limiter.clock = rig.clock
    return rig


def test_the_fetcher_defers_what_is_over_the_limit_and_lets_the_rest_through(tmp_path) -> None:
    rig = _rig(tmp_path, **{"math.floor": "2/s"})
    for n in range(8):
        rig.broker.enqueue(_package("math.floor" if n % 2 else "math.ceil", n=n), key=str(n))
    rig.fetch()
    fetched = [d.payload for d in rig.pusher.fetcher.buffer]
    # Those whose starts were taken first: they start now.
    assert fetched == [_package("math.floor", n=1), _package("math.floor", n=3), _package("math.ceil", n=0),
                       _package("math.ceil", n=2), _package("math.ceil", n=4), _package("math.ceil", n=6)]
    held = [rig.broker.lookup(str(n)) for n in (5, 7)]
    assert [(p.state, p.attempts) for p in held] == [(DELAYED, 0), (DELAYED, 0)]
    # Due when the window has room, the second one step (window / count) later.
    now = rig.clock.now
    step = WINDOW / 2
    assert [p.due for p in held] == [pytest.approx(now + WINDOW), pytest.approx(now + WINDOW + step)]
    assert rig.other_cluster_gets() == []


def test_a_deferred_task_keeps_its_attempt_count_and_max_attempts_does_not_fail_it(tmp_path) -> None:
    rig = _rig(tmp_path, **{"group:mail": "1/s"})
    for n in range(3):
        rig.broker.enqueue(_package("math.floor", group="mail", n=n), key=str(n))
    buffer = rig.pusher.fetcher.buffer
    rig.fetch()
    assert [(d.payload, d.attempts) for d in buffer] == [(_package("math.floor", group="mail", n=0), 1)]
    buffer.clear()
    rig.clock.advance(WINDOW)  # the first deferred one is due, and the window has room...
    rig.broker.take_starts([("group:mail",)], rig.config.rate_limits)  # ...which another cluster takes
    rig.fetch()
    assert not buffer
    assert (rig.broker.lookup("1").state, rig.broker.lookup("1").attempts) == (DELAYED, 0)
    seen = []
    for _ in range(20):
        rig.clock.advance(WINDOW / 2)
        rig.fetch()
        seen += [(d.payload, d.attempts) for d in buffer]
        buffer.clear()
    # The one deferred twice now comes after the other.
    assert seen == [(_package("math.floor", group="mail", n=n), 1) for n in (2, 1)]


def test_only_as_many_starts_are_taken_as_workers_are_free_the_others_wait_uncounted(tmp_path) -> None:
    rig = _rig(tmp_path, workers=2, **{"math.floor": "4/h"})
    for n in range(4):
        rig.broker.enqueue(_package("math.floor", n=n), key=str(n))
    rig.fetch()
    assert [d.attempts for d in rig.pusher.fetcher.buffer] == [1, 1]
    rig.fetch()  # the buffer holds one for each free worker already
    assert len(rig.pusher.fetcher.buffer) == 2
    waiting = [rig.broker.lookup(str(n)) for n in (2, 3)]
    assert [(p.state, p.attempts) for p in waiting] == [(DELAYED, 0), (DELAYED, 0)]
    assert all(p.due - rig.clock.now <= 5 for p in waiting)  # soon: they were not over the limit
    # Two starts counted, not four: two more fit in the hour, and no third.
    taken = rig.broker.take_starts([("math.floor",)] * 3, rig.config.rate_limits)
    assert taken[:2] == [0.0, 0.0] and taken[2] > 0


class _NoThrottle(MemoryBroker):
    def take_starts(self, wanted, limits):
        raise AssertionError("asked the broker about rate limits")


def test_without_rate_limits_the_fetcher_never_asks_the_broker(tmp_path) -> None:
    rig = Rig(str(tmp_path))
    broker = _NoThrottle(QUEUE, LEASE, clock=rig.clock)
    broker.enqueue(_package("math.floor"))
    rig.pusher.fetcher.fetch(broker, 10, wait=0)
    assert len(rig.pusher.fetcher.buffer) == 1


def test_what_the_pusher_will_not_run_is_not_counted_but_passed_on(tmp_path) -> None:
    rig = _rig(tmp_path, **{"math.floor": "1/h"})
    broker = _NoThrottle(QUEUE, LEASE, clock=rig.clock)
    forged = b"DQ\x01\x00" + b"\x00" * 32 + b"not signed"
    broker.enqueue(forged)
    broker.enqueue(_package("math.floor", n=1), key="tired")
    broker.requeue([d.id for d in broker.dequeue(2)])  # the next is their second delivery: over max_attempts=1
    rig.pusher.fetcher.fetch(broker, 10, wait=0)
    assert [d.payload for d in rig.pusher.fetcher.buffer] == [forged, _package("math.floor", n=1)]
    assert broker.lookup("tired").state != QUEUED


# --- a start that came late ---


def test_a_worker_does_not_run_a_job_that_came_after_its_start_by(tmp_path) -> None:
    ours, theirs = Pipe()
    worker = Worker(theirs, 0, Config(name=QUEUE), RunState(state_path(str(tmp_path), 1), writer=True))
    folder = tmp_path / "runs"
    folder.mkdir()
    task = TaskPackage(id="ab" * 16, name="late", func="tests.app.tasks.touch_then_sleep", args=(str(folder), 0))
    payload = pack(task)
    try:
        ours.send(Job("d1", 1, payload, start_by=time.time() - 0.001))
        worker.loop()
        assert list(folder.iterdir()) == []
        ours.send(Job("d2", 1, payload, start_by=time.time() + 60))
        worker.loop()
        worker.flush()
        said: list[object] = []
        while len(said) < 2 and ours.poll(10):
            said += unbatch(ours.recv())
    finally:
        worker.close()
    assert said[0] == Late("d1")
    assert isinstance(said[1], Outcome) and said[1].success
    assert len(list(folder.iterdir())) == 1


def test_the_pusher_hands_a_late_job_back_to_the_broker_its_attempt_taken_back(tmp_path) -> None:
    rig = _rig(tmp_path, workers=1, **{"math.floor": "5/s"})
    rig.broker.enqueue(_package("math.floor"), key="late")
    rig.fetch()
    rig.step()
    (job,) = rig.workers[0].jobs()
    assert time.time() < job.start_by <= time.time() + (WINDOW - 1) / 2
    rig.workers[0].conn.inbox.append(Late(job.delivery_id))
    rig.step()
    rig.leases()
    found = rig.broker.lookup("late")
    assert (found.state, found.attempts) == (QUEUED, 0)
    assert not rig.workers[0].jobs()[1:]  # nothing more was sent to the worker


def test_manage_py_check_reports_a_bad_limit_naming_it(q_cluster) -> None:
    from django_q.apps import check_settings

    q_cluster(rate_limits={"app.tasks.send_mail": "100/d"})
    (error,) = [m for m in check_settings() if m.id == "django_q.E001"]
    assert "Q_CLUSTER['rate_limits']['app.tasks.send_mail']" in error.msg and "'100/d'" in error.msg


def test_a_cluster_serving_several_queues_counts_each_start_in_its_own_queues_logs() -> None:
    from django_q.brokers.queues import Queues
    from django_q.cluster.limits import Limiter

    high, low = MemoryBroker("limits-high", LEASE), MemoryBroker("limits-low", LEASE)
    both = Queues([high, low])
    high.enqueue(_package("math.floor", n=1))
    low.enqueue(_package("math.floor", n=2))
    limiter = Limiter(Config(rate_limits=parse_limits({"math.floor": "1/s"})))
    first, rest = limiter.admit(both, both.dequeue(2))
    # One start of "1/s" in each queue: both run now, neither is deferred.
    assert [d.payload for d in first] == [_package("math.floor", n=1), _package("math.floor", n=2)]
    assert rest == [] and limiter.deferred == 0
    # Each queue's log holds its start: a cluster serving only one of them sees it.
    limits = parse_limits({"math.floor": "1/s"})
    assert high.take_starts([("math.floor",)], limits)[0] > 0
    assert low.take_starts([("math.floor",)], limits)[0] > 0
