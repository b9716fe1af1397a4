"""django_q.backoff.Outage: pauses that grow, one log line per outage and one on recovery."""

import logging

from django_q.backoff import Outage

logger = logging.getLogger("django_q.test_backoff")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def outage(clock: Clock, **kwargs) -> Outage:
    return Outage(logger, "calls failing: %s", "calls go through after %.1fs", clock=clock, **kwargs)


def messages(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == logger.name]


def test_pauses_start_at_first_and_double_up_to_most():
    o = outage(Clock(), first=0.5, most=3.0)
    assert [o.failed(OSError("x")) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_only_the_first_failure_of_an_outage_is_logged(caplog):
    o = outage(Clock(), level=logging.WARNING)
    with caplog.at_level(logging.DEBUG, logger.name):
        for n in range(4):
            o.failed(OSError(f"refused {n}"))
    assert messages(caplog) == [("WARNING", "calls failing: refused 0")]


def test_recovery_logs_the_outage_duration_and_resets_the_pause(caplog):
    clock = Clock()
    o = outage(clock, first=0.2)
    with caplog.at_level(logging.DEBUG, logger.name):
        o.failed("down")
        o.failed("down")
        clock.now += 12.5
        assert o.recovered() == 12.5
        assert o.recovered() is None  # no outage: nothing to log
        assert o.failed("down again") == 0.2
    assert messages(caplog) == [
        ("ERROR", "calls failing: down"),
        ("WARNING", "calls go through after 12.5s"),
        ("ERROR", "calls failing: down again"),
    ]


def test_without_a_back_message_recovery_is_silent(caplog):
    o = Outage(logger, "failing: %s", clock=Clock())
    with caplog.at_level(logging.DEBUG, logger.name):
        o.failed("x")
        o.recovered()
    assert messages(caplog) == [("ERROR", "failing: x")]
    assert not o.ongoing


def test_a_message_of_its_own_with_the_traceback(caplog):
    o = outage(Clock())
    with caplog.at_level(logging.DEBUG, logger.name):
        try:
            raise ValueError("bug")
        except ValueError:
            o.failed(message="pass failed", exc_info=True)
    (record,) = [r for r in caplog.records if r.name == logger.name]
    assert record.getMessage() == "pass failed" and record.exc_info[0] is ValueError


def test_due_says_no_until_the_pause_is_over():
    clock = Clock()
    o = outage(clock, first=0.2)
    assert o.due()
    o.failed("x")
    assert not o.due()
    clock.now += 0.19
    assert not o.due()
    clock.now += 0.02
    assert o.due()
    o.failed("x")  # 0.4 now
    clock.now += 0.3
    assert not o.due()
    o.recovered()
    assert o.due()
