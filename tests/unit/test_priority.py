"""The one priority check every broker (and the enqueue path) goes through."""

import pytest

from django_q.brokers.base import PRIORITY_MAX, PRIORITY_MIN, check_priority
from django_q.exceptions import BatchMismatch, DjangoQError, InvalidPriority, TaskTypeError


@pytest.mark.parametrize("priority", [PRIORITY_MIN, -1, 0, 1, PRIORITY_MAX])
def test_a_whole_number_in_range_is_returned(priority: int) -> None:
    assert check_priority(priority) == priority


@pytest.mark.parametrize("priority", [PRIORITY_MIN - 1, PRIORITY_MAX + 1, True, False, 1.0, "1", None])
def test_anything_else_is_an_invalid_priority(priority: object) -> None:
    with pytest.raises(InvalidPriority, match=repr(priority).replace("(", r"\(")):
        check_priority(priority)


def test_the_errors_are_of_the_tree_and_still_what_callers_caught() -> None:
    assert issubclass(InvalidPriority, DjangoQError)
    assert issubclass(InvalidPriority, TaskTypeError)  # what async_task raised for a bad priority
    assert issubclass(InvalidPriority, ValueError)  # what the brokers raised
    assert issubclass(BatchMismatch, DjangoQError) and issubclass(BatchMismatch, ValueError)
