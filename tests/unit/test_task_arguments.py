"""async_task refuses what the cluster could not run, before any broker is touched.

Every test here configures a Redis broker that refuses connections: a test
that gets TaskTypeError (and not BrokerConnectionError) shows the check ran
before anything was sent.
"""

import functools
import threading
import types

import pytest

from django_q import enqueue, signals
from django_q.exceptions import BrokerConnectionError, PackageTooLarge, TaskTypeError
from django_q.enqueue import build_package, func_reference
from django_q.tasks import async_chain, async_iter, async_many, async_task
from tests.app.tasks import Greeter, add

from .helpers import UNREACHABLE_REDIS, received

pytestmark = pytest.mark.usefixtures("unreachable_redis")


def module_level_task():
    return 1


def refused(func, *args, **kwargs) -> str:
    """The message of the TaskTypeError async_task raises; fails the test on any other outcome."""
    with pytest.raises(TaskTypeError) as info:
        async_task(func, *args, **kwargs)
    assert isinstance(info.value, TypeError)
    return str(info.value)


def test_control_a_good_task_does_reach_the_broker():
    """Without this, the tests below could pass for a broker that is never contacted."""
    with pytest.raises(BrokerConnectionError):
        async_task("math.copysign", 2, -2)


def test_a_lambda_is_refused():
    assert "lambda" in refused(lambda: 1)


def test_a_nested_function_is_refused():
    def nested():
        return 1

    message = refused(nested)
    assert "nested" in message and "inside a function" in message


def test_a_function_defined_in_main_is_refused():
    func = types.FunctionType(module_level_task.__code__, {}, "main_task")
    func.__qualname__ = "main_task"
    func.__module__ = "__main__"
    assert "__main__" in refused(func)


def test_a_function_not_importable_under_its_own_name_is_refused():
    impostor = types.FunctionType(add.__code__, {}, "add")
    impostor.__module__ = add.__module__
    assert "not importable as tests.app.tasks.add" in refused(impostor, 1, 2)


@pytest.mark.parametrize("func", [42, None, ["math.copysign"]])
def test_a_non_callable_is_refused(func):
    assert "must be a callable or a dotted path" in refused(func)


@pytest.mark.parametrize("func", ["copysign", "", "math.", ".copysign", "math copysign.x"])
def test_a_string_that_is_not_a_dotted_path_is_refused(func):
    assert "not a dotted path" in refused(func)


def test_an_unpicklable_argument_is_refused():
    message = refused("math.copysign", threading.Lock(), 1)
    assert "cannot be serialized with pickle" in message
    assert "lock" in message


def test_an_unpicklable_keyword_argument_is_refused():
    assert "cannot be serialized" in refused("tests.app.tasks.echo_kwargs", lock=threading.Lock())


def test_an_unpicklable_callable_object_is_refused():
    assert "cannot be serialized" in refused(functools.partial(lambda x: x, 1))


def test_a_lambda_hook_is_refused():
    assert "hook is a lambda" in refused("math.copysign", 1, 2, hook=lambda task: None)


@pytest.mark.parametrize("timeout", [0, -1, "10", True])
def test_a_bad_timeout_is_refused(timeout):
    assert "timeout" in refused("math.copysign", 1, 2, timeout=timeout)


def test_unknown_q_options_are_refused():
    assert "unknown option(s): retry" in refused("math.copysign", 1, 2, q_options={"retry": 3})


def test_nothing_is_announced_for_a_refused_task():
    with received(signals.pre_enqueue) as calls:
        refused(lambda: 1)
    assert calls == []


def test_pre_enqueue_is_sent_with_the_package_before_it_goes_to_the_broker():
    with received(signals.pre_enqueue) as calls, pytest.raises(BrokerConnectionError):
        async_task("math.copysign", 2, -2, group="signals")
    [call] = calls
    assert (call["task"].func, call["task"].args, call["task"].group) == ("math.copysign", (2, -2), "signals")


@pytest.mark.parametrize("sender", [None, "django_q"])
def test_pre_enqueue_is_sent_for_a_task_without_options_too(sender):
    """A call without options skips making the package unless a receiver (of every sender, or of ours) wants it."""
    calls = []

    def receiver(sender, task, **kwargs):
        calls.append((task.func, task.args, task.kwargs))

    signals.pre_enqueue.connect(receiver, sender=sender, weak=False)
    try:
        with pytest.raises(BrokerConnectionError):
            async_task("math.copysign", 2, -2)
        with pytest.raises(BrokerConnectionError):
            async_task(add, 1, b=2)
    finally:
        signals.pre_enqueue.disconnect(receiver, sender=sender)
    assert calls == [("math.copysign", (2, -2), {}), ("tests.app.tasks.add", (1,), {"b": 2})]


def test_the_fields_of_calls_without_options_are_remembered_for_a_bounded_number_of_functions():
    for i in range(enqueue.PLAIN_MAX + 10):
        with pytest.raises(BrokerConnectionError):
            async_task(f"some.module.function_{i}", i)
        assert len(enqueue._plain) <= enqueue.PLAIN_MAX


def test_async_many_refuses_an_unpicklable_item_by_name_before_the_broker():
    with pytest.raises(TaskTypeError) as info:
        async_many("math.copysign", [(1, 2), (threading.Lock(), 1), (3, 4)])
    message = str(info.value)
    assert "cannot be serialized with pickle" in message and "lock" in message and "math.copysign" in message


def test_async_many_control_good_items_do_reach_the_broker():
    with pytest.raises(BrokerConnectionError):
        async_many("math.copysign", [(1, 2), (3, 4)])


def test_async_many_sends_pre_enqueue_for_each_package():
    with received(signals.pre_enqueue) as calls, pytest.raises(BrokerConnectionError):
        async_many("math.copysign", [(1, 2), (3, 4)], group="many")
    assert [(c["task"].args, c["task"].group) for c in calls] == [((1, 2), "many"), ((3, 4), "many")]


def test_async_many_sends_pre_enqueue_to_a_receiver_of_django_q_alone():
    calls = []

    def receiver(sender, task, **kwargs):
        calls.append(task.args)

    signals.pre_enqueue.connect(receiver, sender="django_q", weak=False)
    try:
        with pytest.raises(BrokerConnectionError):
            async_many("math.copysign", [(1, 2), (3, 4)])
    finally:
        signals.pre_enqueue.disconnect(receiver, sender="django_q")
    assert calls == [(1, 2), (3, 4)]


def test_a_package_over_the_limit_is_refused_before_the_broker(q_cluster):
    q_cluster(redis=UNREACHABLE_REDIS, package_limit=1000)
    with pytest.raises(PackageTooLarge):
        async_task("math.copysign", "x" * 2000, 1)


class TestJsonSerializer:
    @pytest.fixture(autouse=True)
    def json_serializer(self, unreachable_redis, q_cluster):
        q_cluster(redis=UNREACHABLE_REDIS, serializer="json")

    def test_a_bound_method_is_refused(self):
        assert "json serializer needs one" in refused(Greeter().greet, "bob")

    def test_a_callable_object_is_refused(self):
        assert "not a plain function" in refused(Greeter(), "bob")

    def test_an_argument_json_cannot_carry_is_refused(self):
        assert "cannot be serialized with json" in refused("math.copysign", object(), 1)

    def test_a_plain_function_reaches_the_broker(self):
        with pytest.raises(BrokerConnectionError):
            async_task(add, 1, 2)


class TestFuncReference:
    def test_a_function_travels_as_its_dotted_path(self):
        assert func_reference(add, "pickle") == "tests.app.tasks.add"
        assert func_reference(add, "json") == "tests.app.tasks.add"

    def test_a_builtin_travels_as_its_dotted_path(self):
        import math

        assert func_reference(math.copysign, "pickle") == "math.copysign"

    def test_with_pickle_a_bound_method_travels_as_itself(self):
        method = Greeter("hi").greet
        assert func_reference(method, "pickle") == method


class TestOptions:
    """Which keyword arguments are options and which reach the function (nothing is sent here)."""

    def test_options_are_taken_from_the_keyword_arguments(self):
        from django_q.conf import get_config

        options = {"group": "g", "timeout": 5, "hook": "tests.app.tasks.record_hook", "task_name": "my-task"}
        task = build_package("math.copysign", (1, 2), {"x": 1}, options, get_config())
        assert (task.group, task.timeout, task.hook, task.name, task.kwargs) == (
            "g",
            5.0,
            "tests.app.tasks.record_hook",
            "my-task",
            {"x": 1},
        )

    def test_with_q_options_a_kwarg_named_like_an_option_reaches_the_function(self):
        with received(signals.pre_enqueue) as calls, pytest.raises(BrokerConnectionError):
            async_task("tests.app.tasks.echo_kwargs", hook="mine", group="mine", q_options={"group": "theirs"})
        task = calls[0]["task"]
        assert task.kwargs == {"hook": "mine", "group": "mine"}
        assert (task.hook, task.group) == (None, "theirs")

    def test_without_q_options_a_kwarg_named_like_an_option_is_the_option(self):
        with received(signals.pre_enqueue) as calls, pytest.raises(BrokerConnectionError):
            async_task("tests.app.tasks.echo_kwargs", group="mine", other=1)
        task = calls[0]["task"]
        assert (task.kwargs, task.group) == ({"other": 1}, "mine")


class TestIterAndChainArguments:
    def test_async_iter_refuses_a_lambda(self):
        with pytest.raises(TaskTypeError):
            async_iter(lambda x: x, [1, 2])

    def test_async_iter_refuses_an_empty_iterable(self):
        with pytest.raises(TaskTypeError, match="at least one item"):
            async_iter("math.sqrt", [])

    def test_async_iter_refuses_an_unpicklable_item_and_sends_nothing(self):
        with pytest.raises(TaskTypeError):
            async_iter("math.sqrt", [1, threading.Lock()])

    def test_async_chain_refuses_a_lambda_link(self):
        with pytest.raises(TaskTypeError, match="lambda"):
            async_chain([("math.sqrt", (4,)), (lambda: 1,)])

    def test_async_chain_refuses_an_empty_chain(self):
        with pytest.raises(TaskTypeError, match="at least one task"):
            async_chain([])
